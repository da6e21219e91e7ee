"""``diag.generate``: ``model.generate`` written out, on top of the shared loop.

Same answers as ``model.generate`` (greedy and seeded sampling, batches, eos), with
the loop visible in :mod:`diag.generation.decoding`; the model is opened by
:func:`~diag.generation.steps.open_steps` and run by
:func:`~diag.generation.front.run_keywords` (the options resolved once, then
:func:`~diag.generation.front.run_generation`).

>>> import torch
>>> from diag.models import get_untrained_model_with_inputs
>>> model = get_untrained_model_with_inputs("llama")["model"]
>>> generate(model, torch.tensor([[5, 6, 7]]), max_new_tokens=2).shape
torch.Size([1, 5])
"""

from __future__ import annotations

from typing import Any

import torch

from diag.generation.front import run_keywords
from diag.generation.options import UNSET
from diag.generation.parameter_docs import with_parameter_docs
from diag.generation.result import GenerateResult
from diag.generation.steps import open_steps
from diag.generation.streaming import GenerationStream


@with_parameter_docs
def generate(
    model: Any,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int | None = UNSET,
    eos_token_id: int | list[int] | None = UNSET,
    pad_token_id: int | None = UNSET,
    do_sample: bool | None = UNSET,
    temperature: float | None = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float | None = UNSET,
    num_return_sequences: int = UNSET,
    num_beams: int = UNSET,
    length_penalty: float = UNSET,
    early_stopping: bool | str = UNSET,
    output_scores: bool | None = UNSET,
    output_logits: bool | None = UNSET,
    generator: torch.Generator | None = None,
    streamer: Any = None,
    generation_config: Any = None,
    tokenizer: Any = None,
    return_result: bool = False,
    stream: bool = False,
    **kwargs: Any,
) -> torch.Tensor | GenerateResult | GenerationStream:
    """Generates like ``model.generate`` with the loop written out.

    ``model`` is a transformers causal LM (or anything
    :func:`~diag.generation.steps.open_steps` opens: an ONNX model runs in ONNX
    Runtime, see :func:`diag.onnx_generate` for its session options).

    The decoding parameters keep transformers' ``GenerationConfig`` names; other
    ``GenerationConfig`` names (``min_new_tokens``, ``no_repeat_ngram_size``,
    ``min_p``, ``max_length``...) go through ``kwargs``. A parameter left to
    :data:`diag.generation.UNSET` (the default) is not given and takes the value
    ``model.generate`` would take: the ``generation_config`` argument, then
    ``model.generation_config``, then transformers' defaults (``top_k=50`` when
    sampling, 20 new tokens). Any value given, ``None`` included, means what it means
    to ``model.generate``: ``eos_token_id=None`` generates past the model's eos,
    ``top_k=None`` (like ``temperature``, ``top_p``, ``repetition_penalty``,
    ``min_new_tokens``... set to None) turns that processor off, ``do_sample=None`` is
    greedy, ``max_new_tokens=None`` falls back on ``max_length``, ``pad_token_id=None``
    on the first eos; ``num_return_sequences=None`` raises, as ``model.generate`` does.

    ``num_beams > 1`` runs beam search (``length_penalty``, ``early_stopping``; beam
    sampling with ``do_sample=True``), :mod:`diag.generation.beam_search`: the result
    then carries ``sequences_scores`` and ``beam_indices``; streaming needs one beam.

    ``input_ids`` may also be text, a list of texts, chat messages or a list of
    conversations when ``tokenizer`` is given. ``generator`` makes sampling use that
    ``torch.Generator`` instead of the global seed. ``streamer`` is a callable receiving
    each :class:`~diag.generation.decoding.StepEvent` (with its text when a tokenizer
    is given) or a transformers streamer (``TextStreamer``...).

    Returns the ``[batch * num_return_sequences, prompt + new]`` LongTensor
    ``model.generate`` returns; the :class:`GenerateResult` (scores, finish reasons,
    counts, timings) when ``return_result=True``; a
    :class:`~diag.generation.streaming.GenerationStream` of step events when
    ``stream=True``.

    :param model: the causal LM (or what ``open_steps`` opens)
    :param input_ids: the prompt: ``[batch, seq]`` token ids, or text with ``tokenizer``
    :param attention_mask: 0 on the left padding of a batch (None: all ones)
    .. decoding parameters

    >>> import torch, diag
    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> tokens = diag.generate(model, ids, max_new_tokens=5)
    >>> torch.equal(tokens, model.generate(ids, max_new_tokens=5))
    True
    >>> res = diag.generate(model, ids, max_new_tokens=5, do_sample=True, top_p=0.9,
    ...                     generator=torch.Generator().manual_seed(0), return_result=True)
    >>> res.num_generated_tokens, res.finish_reasons
    ([5], ['length'])

    With a tokenizer (``diag.load_pretrained``)::

        res = diag.generate(model, "def fib(n):", tokenizer=tokenizer, max_new_tokens=50,
                            return_result=True)
        res.finish_reasons, res.texts(tokenizer)
    """
    return run_keywords(open_steps(model), locals())


def stream(
    model: torch.nn.Module,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> GenerationStream:
    """``generate(..., stream=True)``: an iterator of step events.

    >>> import torch
    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> s = stream(model, torch.tensor([[5, 6, 7]]), max_new_tokens=3)
    >>> [e.step for e in s], s.result.sequences.shape
    ([0, 1, 2], torch.Size([1, 6]))

    With a tokenizer, each event holds its text::

        s = diag.generation.stream(model, "Once upon", tokenizer=tok, max_new_tokens=30)
        text = "".join(e.text[0] for e in s)
    """
    return generate(model, input_ids, attention_mask, stream=True, **kwargs)
