"""Streaming: the tokens (and text) of a generation as they are produced.

Two ways, same tokens as the non-streaming call:

* an iterator, :func:`stream_decode` (any backend) or ``diag.generation.stream`` /
  ``diag.generate(..., stream=True)`` (a torch model), yielding one
  :class:`~diag.generation.decoding.StepEvent` per step; its ``result`` attribute
  holds the :class:`~diag.generation.result.GenerateResult` once exhausted;
* a callback, ``streamer=`` of :func:`~diag.generation.decoding.decode` /
  ``diag.generate``: a callable receiving each event, or a transformers streamer
  (``TextStreamer``...) fed through ``put``/``end``.

With a tokenizer, ``event.text[i]`` is the new text of row i at this step (empty
while a multi-byte character is incomplete or the row is finished).

Example::

    for event in diag.generation.stream(model, "def f(x):", tokenizer=tok, max_new_tokens=20):
        print(event.text[0], end="", flush=True)
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any

import torch

from diag.generation.backend import StepBackend
from diag.generation.decoding import StepEvent, iter_decode
from diag.generation.options import DecodingOptions
from diag.generation.result import GenerateResult


class TextDeltas:
    """Turns tokens into text increments, one row at a time.

    Decodes each row's generated tokens so far and returns what was added since the
    previous call; text ending in an incomplete UTF-8 sequence (U+FFFD) is held back
    until the next tokens complete it.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[list[int]] = []
        self.texts: list[str] = []

    def push(self, event: StepEvent) -> list[str]:
        """The text delta of each row for ``event``."""
        ids = event.token_ids.tolist()
        active = event.active.tolist()
        if not self.tokens:
            self.tokens = [[] for _ in ids]
            self.texts = ["" for _ in ids]
        deltas = []
        for row, (token, alive) in enumerate(zip(ids, active, strict=True)):
            if not alive:
                deltas.append("")
                continue
            self.tokens[row].append(token)
            text = self.tokenizer.decode(
                self.tokens[row], skip_special_tokens=self.skip_special_tokens
            )
            if text.endswith("\ufffd") or not text.startswith(self.texts[row]):
                # incomplete character, or a tokenizer that rewrites earlier text
                # (cleanup of spaces): wait for more tokens
                deltas.append("")
                continue
            deltas.append(text[len(self.texts[row]) :])
            self.texts[row] = text
        return deltas

    def annotate(self, event: StepEvent) -> StepEvent:
        """``event`` with its ``text`` set to the deltas of :meth:`push`."""
        event.text = self.push(event)
        return event

    def flush(self) -> list[str]:
        """Whatever was held back, once the generation is over."""
        out = []
        for row, tokens in enumerate(self.tokens):
            text = self.tokenizer.decode(tokens, skip_special_tokens=self.skip_special_tokens)
            out.append(text[len(self.texts[row]) :] if text.startswith(self.texts[row]) else "")
            self.texts[row] = text
        return out


class GenerationStream:
    """Iterator over the :class:`StepEvent` of one generation.

    ``result`` is None until the iteration ends, then the :class:`GenerateResult`
    (the same the non-streaming call returns). With a tokenizer, each event's ``text``
    holds the text deltas (:class:`TextDeltas`).

    Example::

        s = stream_decode(backend, ids, None, options)
        tokens = [e.token_ids for e in s]
        s.result.sequences
    """

    def __init__(
        self, events: Generator[StepEvent, None, GenerateResult], tokenizer: Any | None = None
    ):
        self.result: GenerateResult | None = None
        self._deltas = TextDeltas(tokenizer) if tokenizer is not None else None
        self._events = self._keep_result(events)

    def _keep_result(
        self, events: Generator[StepEvent, None, GenerateResult]
    ) -> Generator[StepEvent, None, None]:
        # `yield from` hands the loop's return value over when it ends
        self.result = yield from events

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> StepEvent:
        event = next(self._events)
        return self._deltas.annotate(event) if self._deltas is not None else event

    def run(self) -> GenerateResult:
        """Consumes the remaining events and returns the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def stream_decode(
    backend: StepBackend,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    *,
    generator: torch.Generator | None = None,
    tokenizer: Any | None = None,
    step_context: Callable[[], AbstractContextManager[Any]] | None = None,
) -> GenerationStream:
    """:func:`~diag.generation.decoding.decode` as an iterator of step events.

    Nothing runs until the first ``next``; ``step_context`` (a context manager factory)
    is entered around each step; with a ``tokenizer``, the events hold their text.

    Example::

        for event in stream_decode(TorchBackend(model), ids, None, options, tokenizer=tok):
            print(event.text[0], end="")
    """
    events = iter_decode(
        backend, input_ids, attention_mask, options, generator=generator, step_context=step_context
    )
    return GenerationStream(events, tokenizer)
