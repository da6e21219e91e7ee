"""Logits processing and token choice, the way ``model.generate`` does them.

The processors are transformers' own classes, appended in the order
``GenerationMixin._get_logits_processor`` appends them (transformers 5.x): first the
processors that apply to every strategy (repetition penalty, n-gram blocking, minimum
length), then, only when sampling, the warpers (temperature, top-k, top-p, min-p,
typical, epsilon, eta). A :class:`TokenChoice` then picks the token: ``argmax``
(:class:`Greedy`) or one ``torch.multinomial`` draw from the softmax (:class:`Sampling`),
the same calls on the same random stream, so a seeded run reproduces ``model.generate``
token for token.

Example::

    processor = build_logits_processor(options, prompt_length=ids.shape[1], attention_mask=mask)
    scores = processor(sequences_so_far, logits)
    next_tokens = token_choice(options.do_sample, generator)(scores)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from diag.compat.transformers_api import repetition_penalty_ignores_padding
from diag.generation.options import DecodingOptions


def build_logits_processor(
    options: DecodingOptions,
    *,
    prompt_length: int,
    attention_mask: torch.Tensor | None = None,
) -> LogitsProcessorList:
    """The processors ``model.generate`` would build for these options.

    ``prompt_length`` is the padded prompt length; ``attention_mask`` the (expanded)
    prompt mask, used like transformers to keep left padding out of the repetition
    penalty.

    Example::

        build_logits_processor(DecodingOptions(do_sample=True, top_k=5), prompt_length=7)
        # [TopKLogitsWarper(top_k=5)]
    """
    processors = LogitsProcessorList()
    eos = options.eos_token_ids
    eos_tensor = torch.tensor(eos, dtype=torch.long) if eos else None
    device = attention_mask.device if attention_mask is not None else "cpu"

    if options.repetition_penalty is not None and options.repetition_penalty != 1.0:
        # transformers drops an all-ones mask before building the processors: then no
        # position is ignored, which is what the argmax below gives too (zeros)
        padding_lengths = None
        # 4.57's generate penalises the padding tokens too (its processor takes no lengths)
        padded = attention_mask is not None and not bool((attention_mask == 1).all())
        if padded and repetition_penalty_ignores_padding():
            padding_lengths = (attention_mask != 0).int().argmax(dim=1)
        processors.append(
            RepetitionPenaltyLogitsProcessor(
                float(options.repetition_penalty), prompt_ignore_length=padding_lengths
            )
        )
    if options.no_repeat_ngram_size is not None and options.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(options.no_repeat_ngram_size))
    # the minimum lengths only matter when there is an eos to hold back
    min_length = options.min_length
    if options.min_new_tokens is not None:
        # transformers turns min_new_tokens into a min_length too and keeps both processors
        min_length = options.min_new_tokens + prompt_length
    if min_length is not None and eos_tensor is not None and min_length > 0:
        processors.append(MinLengthLogitsProcessor(min_length, eos_tensor, device=device))
    if options.min_new_tokens is not None and eos_tensor is not None and options.min_new_tokens > 0:
        processors.append(
            MinNewTokensLengthLogitsProcessor(
                prompt_length, options.min_new_tokens, eos_tensor, device=device
            )
        )

    if options.do_sample:
        # min_tokens_to_keep: 1 without beams; with beams one more than the eos ids
        # (at least 2), so that a hypothesis may always go on without an eos
        keep = max(2, 1 + len(eos)) if options.num_beams > 1 else 1
        if options.temperature is not None and options.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(float(options.temperature)))
        if options.top_k is not None and options.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=options.top_k, min_tokens_to_keep=keep))
        if options.top_p is not None and options.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=options.top_p, min_tokens_to_keep=keep))
        if options.min_p is not None:
            processors.append(MinPLogitsWarper(min_p=options.min_p, min_tokens_to_keep=keep))
        if options.typical_p is not None and options.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(mass=options.typical_p, min_tokens_to_keep=keep))
        if options.epsilon_cutoff is not None and 0.0 < options.epsilon_cutoff < 1.0:
            processors.append(
                EpsilonLogitsWarper(epsilon=options.epsilon_cutoff, min_tokens_to_keep=keep)
            )
        if options.eta_cutoff is not None and 0.0 < options.eta_cutoff < 1.0:
            processors.append(
                EtaLogitsWarper(epsilon=options.eta_cutoff, min_tokens_to_keep=keep, device=device)
            )
    return processors


def greedy_tokens(scores: torch.Tensor) -> torch.Tensor:
    """``argmax(scores, dim=-1)``: the first of the highest scores of each row
    (a NaN counts as the highest, as in torch).

    On the CPU, torch's argmax runs one element at a time: ~90 us for a row of
    SmolLM2's 49152 scores, 0.7 ms for 8 rows (one torch thread, as
    :func:`diag.onnx_generate` runs the loop), where numpy's, which takes
    the same first index, needs ~5 us a row. So float CPU tensors go through numpy.

    >>> greedy_tokens(torch.tensor([[0.0, 2.0, 2.0], [float("-inf"), -1.0, -3.0]])).tolist()
    [1, 1]
    """
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.argmax(scores.detach().numpy(), axis=-1))
    return torch.argmax(scores, dim=-1)


class TokenChoice(Protocol):
    """How the loop picks the next token of each row from processed scores.

    The loop (:mod:`diag.generation.decoding`) calls it once per step with the
    ``[batch, vocab]`` scores and writes the ``[batch]`` tokens it returns; greedy
    search and sampling keep every row where it is. Beam search
    (:class:`diag.generation.beam_search.BeamSearch`) keeps several hypotheses per prompt:
    it holds their scores itself and also says which row each new token continues, so
    that the loop reorders its rows and the backend its cache.
    """

    def __call__(self, scores: torch.Tensor) -> torch.Tensor: ...


class Greedy:
    """The highest score of each row (:func:`greedy_tokens`).

    >>> Greedy()(torch.tensor([[0.0, 3.0, 1.0]])).tolist()
    [1]
    """

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return greedy_tokens(scores)


class Sampling:
    """One multinomial draw from the softmax of each row, the call ``model.generate``
    makes, on ``generator`` (None: the global random stream).

    >>> Sampling(torch.Generator().manual_seed(0))(torch.tensor([[0.0, 50.0]])).tolist()
    [1]
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.nn.functional.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)


def token_choice(do_sample: bool, generator: torch.Generator | None = None) -> TokenChoice:
    """The strategy of the options: :class:`Sampling` when ``do_sample``, else
    :class:`Greedy`.

    >>> type(token_choice(False)).__name__, type(token_choice(True)).__name__
    ('Greedy', 'Sampling')
    """
    return Sampling(generator) if do_sample else Greedy()


def choose_tokens(
    scores: torch.Tensor, *, do_sample: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Next token per row ``[batch]`` from processed scores ``[batch, vocab]``, by the
    strategy :func:`token_choice` picks.

    Greedy is ``argmax``; sampling is one multinomial draw from the softmax, exactly
    the calls ``model.generate`` makes (so the global seed, or ``generator``, gives the
    same tokens).

    Example::

        torch.manual_seed(0)
        choose_tokens(torch.randn(2, 10), do_sample=True)
    """
    return token_choice(do_sample, generator)(scores)
