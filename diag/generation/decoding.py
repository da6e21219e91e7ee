"""The decoding loop, shared by every backend (torch, ONNX Runtime).

It reads like the textbook version: one prefill call on the whole prompt, then one
call per new token with the cache passed back explicitly. Everything that decides the
tokens lives here (logits processing, token choice, stop bookkeeping, attention mask
and position ids); the backend only runs the model for one step, see
:class:`diag.generation.backend.StepBackend`.

The loop runs in phases, each a small function: :func:`_start` (the buffers),
:func:`_prefill` (the whole prompt, no cache), :func:`_decode_one` (the token chosen
last, on the cache), and after each of those two :func:`_choose` (logits processing,
the token choice of a :class:`~diag.generation.sampling.TokenChoice`, stop
bookkeeping); :func:`_result` gathers the :class:`GenerateResult`.

Batches are left-padded. Position ids follow the attention mask the way
``model.generate`` computes them (:mod:`diag.contract.positions`, then ``+1`` per
step), so each row generates what it would generate alone. A row that produces an eos
is finished: it keeps receiving the pad id (like transformers) while the other rows go
on, and the loop ends when every row is finished or ``max_new_tokens`` is reached.

Example::

    backend = TorchBackend(model)
    options = resolve_options(defaults=model.generation_config, max_new_tokens=20)
    result = decode(backend, input_ids, attention_mask, options)
    result.sequences  # same as model.generate(input_ids, attention_mask=..., max_new_tokens=20)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from diag.contract.positions import position_ids as prompt_position_ids
from diag.generation.backend import StepBackend
from diag.generation.beam_search import BeamSearch, BeamStep, fill_token
from diag.generation.options import DecodingOptions
from diag.generation.result import GenerateResult
from diag.generation.sampling import TokenChoice, build_logits_processor, token_choice

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class StepEvent:
    """What one decoding step produced.

    ``step`` is 0 for the token chosen from the prefill logits. ``token_ids``
    ``[batch]`` holds the chosen tokens (the pad id for rows finished before this
    step); ``active`` ``[batch]`` tells which rows produced a real token this step;
    ``finished`` ``[batch]`` which rows are done after it. ``text`` holds the decoded
    text delta of each row when a tokenizer is known (see
    :func:`diag.generation.stream`), else None.
    """

    step: int
    token_ids: torch.Tensor
    active: torch.Tensor
    finished: torch.Tensor
    text: list[str] | None = None


def check_token_ids(ids: torch.Tensor, vocab_size: int | None, what: str = "input_ids") -> None:
    """Raises a ValueError naming the first token id of ``ids`` outside the vocabulary
    ``[0, vocab_size)`` (negative ids only when ``vocab_size`` is None): the embedding
    would fail with torch's or ONNX Runtime's index error, or, for a negative id, wrap
    around silently.

    >>> check_token_ids(torch.tensor([[1, 5]]), 10)
    >>> check_token_ids(torch.tensor([[1, 12]]), 10)
    Traceback (most recent call last):
    ...
    ValueError: input_ids holds the token id 12 (row 0, position 1), outside the model's vocabulary [0, 10); encode the text with the model's own tokenizer.
    """
    if ids.numel() == 0:
        return
    bad = ids < 0 if vocab_size is None else (ids < 0) | (ids >= vocab_size)
    if not bool(bad.any()):
        return
    where = tuple(int(i) for i in bad.nonzero()[0])
    place = f"row {where[0]}, position {where[1]}" if len(where) == 2 else f"index {where}"
    vocabulary = "[0, ...)" if vocab_size is None else f"[0, {vocab_size})"
    raise ValueError(
        f"{what} holds the token id {int(ids[where])} ({place}), outside the model's "
        f"vocabulary {vocabulary}; encode the text with the model's own tokenizer."
    )


def check_inputs(
    input_ids: Any, attention_mask: Any, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validates and normalises the prompt: ``[batch, seq]`` int64 ids and mask.

    A 1-D tensor is taken as one row. Token ids must lie in ``[0, vocab_size)`` (when
    known: the backend's vocabulary), mask values be 0 or 1. Raises a
    ValueError/TypeError that says what to pass instead; runs once per call, never per
    step.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"input_ids must be a torch.Tensor of token ids, not {type(input_ids).__name__}; "
            "tokenize the text first (tokenizer(text, return_tensors='pt').input_ids) or "
            "give diag.generate a tokenizer."
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}.")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 1:
            attention_mask = attention_mask.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must be 2-D [batch, sequence], got shape {tuple(input_ids.shape)}."
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids is empty (shape {tuple(input_ids.shape)}); give at least one token per row."
        )
    input_ids = input_ids.long()
    check_token_ids(input_ids, vocab_size)
    if attention_mask is None:
        return input_ids, torch.ones_like(input_ids)
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(
            f"attention_mask must be a torch.Tensor, not {type(attention_mask).__name__}."
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
            f"{tuple(input_ids.shape)}; they must match (one 0/1 per token, 0 on left padding)."
        )
    other = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
    if other.numel():
        raise ValueError(
            f"attention_mask holds values other than 0 and 1 ({other.unique()[:5].tolist()}); "
            "give 1 for each token and 0 for each left-padding slot."
        )
    attention_mask = attention_mask.long()
    empty_rows = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(
            f"rows {empty_rows} of attention_mask are all zeros: those prompts have no token."
        )
    return input_ids, attention_mask


def infer_attention_mask(input_ids: torch.Tensor, options: DecodingOptions) -> torch.Tensor:
    """The mask ``model.generate`` assumes when none is given.

    Pad tokens are masked out when the pad id appears in the prompt and differs from
    every eos id (otherwise a pad could be a real eos token and nothing can be
    inferred): all ones in every other case.

    >>> infer_attention_mask(torch.tensor([[0, 0, 5, 6]]), DecodingOptions(pad_token_id=0)).tolist()
    [[0, 0, 1, 1]]
    """
    pad = options.effective_pad_token_id
    if pad is None or pad in options.eos_token_ids or not bool((input_ids == pad).any()):
        return torch.ones_like(input_ids)
    mask = input_ids.ne(pad).long()
    empty_rows = (mask.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(
            f"rows {empty_rows} of input_ids hold only the pad id {pad}: those prompts have no "
            "token; pass an attention_mask if the pad id is a real token there."
        )
    return mask


def iter_decode(
    backend: StepBackend,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    *,
    generator: torch.Generator | None = None,
    on_prompt: Callable[[torch.Tensor], None] | None = None,
    step_context: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Generator[StepEvent, None, GenerateResult]:
    """The loop as a generator: yields a :class:`StepEvent` per new token and returns
    the :class:`GenerateResult` (:func:`run_to_end` gets it).

    ``on_prompt`` receives the (expanded) prompt before the prefill, the way
    transformers hands it to a streamer; ``step_context`` (a context manager factory)
    is entered around each step. Time spent by the consumer between two events is not
    counted in the result's timings.
    """
    # validated here, eagerly: a bad input fails at the call, not at the first next()
    given_mask = attention_mask is not None
    input_ids, attention_mask = check_inputs(
        input_ids, attention_mask, getattr(backend, "vocab_size", None)
    )
    if not given_mask:
        attention_mask = infer_attention_mask(input_ids, options)
    options.validate(getattr(backend, "vocab_size", None))
    options.num_new_tokens(input_ids.shape[1])  # raises if max_length < prompt
    if options.num_beams > 1 and not callable(getattr(backend, "reorder", None)):
        raise ValueError(
            f"num_beams={options.num_beams} needs a backend that reorders its cache between "
            f"steps (a reorder(past, rows) method), which {type(backend).__name__} lacks; "
            "use num_beams=1 with it."
        )
    step_context = step_context or contextlib.nullcontext
    return _loop(backend, input_ids, attention_mask, options, generator, on_prompt, step_context)


@dataclass
class _Run:
    """The state of one generation: the buffers the phases below read and write."""

    #: ``[batch, prompt + max_new]`` tokens and mask, filled up to ``length``: one
    #: buffer each, sliced at each step, rather than a column concatenated every step
    sequences: torch.Tensor
    mask: torch.Tensor
    length: int
    #: the position ids of the tokens the next step feeds
    position_ids: torch.Tensor
    processor: Any
    choice: TokenChoice
    eos: torch.Tensor | None
    pad: torch.Tensor
    unfinished: torch.Tensor
    num_generated: list[int]
    finish_reasons: list[str]
    scores: list[torch.Tensor] | None
    raw_logits: list[torch.Tensor] | None
    #: ``[batch, 1]``: the tokens chosen last, which the next decode step feeds
    next_tokens: torch.Tensor | None = None
    #: the hypotheses of a beam search (``num_beams > 1``), which then chooses the tokens
    beams: BeamSearch | None = None
    #: the row of the last step each row continues (beam search), which the next decode
    #: step reorders the cache by; None: every row stays where it is
    rows: torch.Tensor | None = None
    #: every step's decision of a beam search, kept for the result (diagnose reads it)
    beam_steps: list[BeamStep] = field(default_factory=list)
    step: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


def _start(
    backend: StepBackend,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    options: DecodingOptions,
    generator: torch.Generator | None,
) -> _Run:
    """The buffers of a generation of the (expanded) prompt."""
    batch, prompt_length = input_ids.shape
    max_new = options.num_new_tokens(prompt_length)
    device = input_ids.device
    total = prompt_length + max_new
    reserve = getattr(backend, "reserve", None)
    if reserve is not None:
        # a backend with buffers of a fixed size refuses a longer generation now
        reserve(batch, total)
    beams = None
    if options.num_beams > 1:
        # batch holds num_beams rows per prompt (the loop repeated it)
        beams = BeamSearch(
            options,
            batch // options.num_beams,
            prompt_length,
            fill=fill_token(options),
            generator=generator,
            device=device,
        )
        # a hypothesis that ends early reads this token after its end
        sequences = torch.full((batch, total), beams.fill, dtype=torch.long, device=device)
    else:
        sequences = torch.empty((batch, total), dtype=torch.long, device=device)
    sequences[:, :prompt_length] = input_ids
    mask = torch.ones((batch, total), dtype=attention_mask.dtype, device=device)
    mask[:, :prompt_length] = attention_mask
    eos_ids = options.eos_token_ids
    pad_id = options.effective_pad_token_id
    return _Run(
        sequences=sequences,
        mask=mask,
        length=prompt_length,
        position_ids=prompt_position_ids(attention_mask),
        processor=build_logits_processor(
            options, prompt_length=prompt_length, attention_mask=attention_mask
        ),
        choice=token_choice(bool(options.do_sample), generator),
        eos=torch.tensor(eos_ids, dtype=torch.long, device=device) if eos_ids else None,
        pad=torch.tensor(pad_id if pad_id is not None else 0, dtype=torch.long, device=device),
        unfinished=torch.ones(batch, dtype=torch.bool, device=device),
        num_generated=[max_new] * batch,
        finish_reasons=["length"] * batch,
        scores=[] if options.output_scores else None,
        raw_logits=[] if options.output_logits else None,
        beams=beams,
    )


def _prefill(backend: StepBackend, run: _Run, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The whole prompt, no cache yet: the logits of its last position and the cache."""
    return backend.prefill(input_ids, run.mask[:, : run.length], run.position_ids)


def _decode_one(backend: StepBackend, run: _Run, past: Any) -> tuple[torch.Tensor, Any]:
    """The token chosen last, on top of ``past``: its logits and the longer cache
    (beam search: first reordered to follow the rows the hypotheses continue)."""
    if run.rows is not None:
        past = backend.reorder(past, run.rows)
    run.position_ids = run.position_ids[:, -1:] + 1
    return backend.decode(run.next_tokens, run.mask[:, : run.length], run.position_ids, past)


def _choose(run: _Run, logits: torch.Tensor) -> StepEvent:
    """Processes the logits, chooses each row's token, writes it and keeps the stop
    bookkeeping (a row that produced an eos is finished and then gets the pad id, as
    in transformers)."""
    logits = logits.float()
    if run.beams is not None:
        return _choose_beams(run, logits)
    scores = run.processor(run.sequences[:, : run.length], logits) if run.processor else logits
    tokens = run.choice(scores)
    active = run.unfinished
    if run.eos is not None:
        tokens = torch.where(run.unfinished, tokens, run.pad)
        run.unfinished = run.unfinished & ~torch.isin(tokens, run.eos)
        for row in (active & ~run.unfinished).nonzero().flatten().tolist():
            run.num_generated[row] = run.step + 1
            run.finish_reasons[row] = "stop"
    run.sequences[:, run.length] = tokens
    run.length += 1
    run.next_tokens = tokens[:, None]
    if run.scores is not None:
        run.scores.append(scores.clone() if scores is logits else scores)
    if run.raw_logits is not None:
        run.raw_logits.append(logits.clone())
    event = StepEvent(step=run.step, token_ids=tokens, active=active, finished=~run.unfinished)
    run.step += 1
    return event


def _choose_beams(run: _Run, logits: torch.Tensor) -> StepEvent:
    """Beam search's step: the processors act on the log-probabilities (as in
    ``model.generate``), the hypotheses choose the rows that go on and their tokens;
    the token buffer follows the rows now, the cache at the next decode step."""
    assert run.beams is not None
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
    sequences = run.sequences[:, : run.length]
    scores = run.processor(sequences, log_probs) if run.processor else log_probs
    step = run.beams.step(sequences, scores)
    run.beam_steps.append(step)
    identity = torch.equal(step.rows, torch.arange(step.rows.shape[0], device=step.rows.device))
    # rows move only among the beams of one prompt, which share its mask and positions
    run.rows = None if identity else step.rows
    if not identity:
        run.sequences = run.sequences.index_select(0, step.rows)
    run.sequences[:, run.length] = step.tokens
    run.length += 1
    run.next_tokens = step.tokens[:, None]
    if run.beams.done:
        run.unfinished = torch.zeros_like(run.unfinished)
    if run.scores is not None:
        run.scores.append(scores.clone() if scores is log_probs else scores)
    if run.raw_logits is not None:
        run.raw_logits.append(logits.clone())
    active = torch.ones_like(run.unfinished)
    event = StepEvent(step=run.step, token_ids=step.tokens, active=active, finished=~run.unfinished)
    run.step += 1
    return event


def _result(run: _Run, prompt_length: int) -> GenerateResult:
    if run.beams is not None and run.step > 0:
        return _beam_result(run, prompt_length)
    if run.beams is not None:
        # no step (max_new_tokens=0): the prompt, once per sequence returned
        keep = torch.arange(run.sequences.shape[0]) % run.beams.num_beams
        rows = keep < run.beams.num_return_sequences
        run.sequences = run.sequences[rows.to(run.sequences.device)]
        run.num_generated = [0] * int(rows.sum())
        run.finish_reasons = ["length"] * int(rows.sum())
    return GenerateResult(
        sequences=run.sequences[:, : run.length].contiguous(),
        num_prompt_tokens=prompt_length,
        num_generated_tokens=run.num_generated,
        finish_reasons=run.finish_reasons,
        scores=tuple(run.scores) if run.scores is not None else None,
        logits=tuple(run.raw_logits) if run.raw_logits is not None else None,
        prefill_seconds=run.prefill_seconds,
        decode_seconds=run.decode_seconds,
        num_steps=run.step,
    )


def _beam_result(run: _Run, prompt_length: int) -> GenerateResult:
    """The best finished hypotheses of each prompt, as ``model.generate`` returns them."""
    assert run.beams is not None
    best = run.beams.finish()
    eos = run.eos
    last = [best.sequences[i, prompt_length + n - 1] for i, n in enumerate(best.lengths)]
    reasons = [
        "stop" if eos is not None and n > 0 and bool(torch.isin(token, eos)) else "length"
        for token, n in zip(last, best.lengths, strict=True)
    ]
    return GenerateResult(
        sequences=best.sequences,
        num_prompt_tokens=prompt_length,
        num_generated_tokens=best.lengths,
        finish_reasons=reasons,
        scores=tuple(run.scores) if run.scores is not None else None,
        logits=tuple(run.raw_logits) if run.raw_logits is not None else None,
        prefill_seconds=run.prefill_seconds,
        decode_seconds=run.decode_seconds,
        num_steps=run.step,
        sequences_scores=best.scores,
        beam_indices=best.beam_indices,
        beam_steps=tuple(run.beam_steps),
    )


def _loop(
    backend: StepBackend,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    options: DecodingOptions,
    generator: torch.Generator | None,
    on_prompt: Callable[[torch.Tensor], None] | None,
    step_context: Callable[[], AbstractContextManager[Any]],
) -> Generator[StepEvent, None, GenerateResult]:
    # like transformers: each prompt repeated in place (rows 0,0,1,1,... for n=2), once
    # per hypothesis of a beam search, else once per sequence returned
    repeats = options.num_beams if options.num_beams > 1 else options.num_return_sequences
    if repeats > 1:
        input_ids = input_ids.repeat_interleave(repeats, dim=0)
        attention_mask = attention_mask.repeat_interleave(repeats, dim=0)
    prompt_length = input_ids.shape[1]
    max_new = options.num_new_tokens(prompt_length)
    run = _start(backend, input_ids, attention_mask, options, generator)
    if on_prompt is not None:
        on_prompt(input_ids)
    if max_new == 0:
        return _result(run, prompt_length)
    # each phase runs inside step_context only: the consumer's code between two events
    # runs with its own settings (onnx_generate streams with single_torch_thread)
    with step_context():
        begin = time.perf_counter()
        logits, past = _prefill(backend, run, input_ids)
        event = _choose(run, logits)
        run.prefill_seconds += time.perf_counter() - begin
    yield event
    while run.step < max_new and bool(run.unfinished.any()):
        with step_context():
            begin = time.perf_counter()
            logits, past = _decode_one(backend, run, past)
            event = _choose(run, logits)
            run.decode_seconds += time.perf_counter() - begin
        yield event
    return _result(run, prompt_length)


def _prompt_callback(streamer: Any) -> Callable[[torch.Tensor], None] | None:
    if streamer is not None and hasattr(streamer, "put"):
        return lambda ids: streamer.put(ids.cpu())
    return None


def _event_callback(streamer: Any) -> Callable[[StepEvent], None] | None:
    """A transformers-style streamer (put/end) or a plain callable taking a StepEvent."""
    if streamer is None:
        return None
    if hasattr(streamer, "put"):
        return lambda event: streamer.put(event.token_ids.cpu())
    if callable(streamer):
        return streamer
    raise TypeError(
        f"streamer must be a callable taking a StepEvent or an object with put()/end() "
        f"(like transformers.TextStreamer), not {type(streamer).__name__}."
    )


def run_to_end(events: Generator[T, None, R], callback: Callable[[T], None] | None = None) -> R:
    """Runs a generator to its end, calling ``callback`` on each item; returns the
    generator's return value (the loop's :class:`GenerateResult`): the one place that
    reads ``StopIteration.value``.

    >>> def count():
    ...     yield from range(3)
    ...     return "done"
    >>> seen = []
    >>> run_to_end(count(), seen.append), seen
    ('done', [0, 1, 2])
    """
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)


def decode(
    backend: StepBackend,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    *,
    generator: torch.Generator | None = None,
    streamer: Any = None,
) -> GenerateResult:
    """Generates with ``backend`` and returns a :class:`GenerateResult`.

    ``streamer`` is a callable receiving each :class:`StepEvent`, or a
    transformers-style streamer (``put`` gets the prompt then each step's tokens,
    ``end`` is called at the end).

    >>> from diag.generation.torch_backend import TorchBackend
    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> decode(TorchBackend(model), ids, None, DecodingOptions(max_new_tokens=10)).sequences.shape
    torch.Size([1, 13])
    """
    callback = _event_callback(streamer)
    events = iter_decode(
        backend,
        input_ids,
        attention_mask,
        options,
        generator=generator,
        on_prompt=_prompt_callback(streamer),
    )
    result = run_to_end(events, callback)
    if streamer is not None and hasattr(streamer, "end"):
        streamer.end()
    return result
