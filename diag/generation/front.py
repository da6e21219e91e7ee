"""The run behind :func:`diag.generate` and :func:`diag.onnx_generate`, once the model
is opened (:func:`~diag.generation.steps.open_steps`) and the options resolved
(:func:`~diag.generation.options.resolve_options`): the prompt, the two ways to stream
and what is returned::

    diag.generate(model, ids, **kw) / diag.onnx_generate(path, ids, **kw)
        -> open_steps(model), resolve_options(..., steps.defaults, **kw)
        -> run_generation(steps, ids, mask, options)
        -> prepare_prompt -> decode | stream_decode -> the loop (decoding.py)
        -> GenerateResult

>>> from diag.generation.options import resolve_options
>>> from diag.generation.steps import open_steps
>>> from diag.models import get_untrained_model_with_inputs
>>> steps = open_steps(get_untrained_model_with_inputs("llama")["model"])
>>> options = resolve_options(None, steps.defaults, max_new_tokens=4)
>>> run_generation(steps, torch.tensor([[5, 6, 7]]), None, options, return_result=True).finish_reasons
['length']
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from diag.generation.decoding import StepEvent, decode
from diag.generation.options import DecodingOptions, named_options, resolve_options
from diag.generation.prompt import prepare_prompt
from diag.generation.result import GenerateResult
from diag.generation.steps import Steps
from diag.generation.streaming import GenerationStream, TextDeltas, stream_decode


def run_generation(
    steps: Steps,
    input_ids: Any,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    *,
    generator: torch.Generator | None = None,
    streamer: Any = None,
    tokenizer: Any = None,
    return_result: bool = False,
    stream: bool = False,
    step_context: Callable[[], AbstractContextManager[Any]] | None = None,
) -> torch.Tensor | GenerateResult | GenerationStream:
    """Generates with ``steps`` and the resolved ``options``.

    ``step_context`` (a context manager factory; default: the one of ``steps``) is
    entered around the generation, or around each step of a stream. The other
    parameters are those of :func:`diag.generate`.
    """
    if options.num_beams > 1 and (stream or streamer is not None):
        # model.generate refuses a streamer with beams too
        raise ValueError(
            f"stream= and streamer= need num_beams=1 (got {options.num_beams}): beam search "
            "reorders its hypotheses at every step, so no token is final before the end; "
            "generate without streaming and read the result."
        )
    ids, mask = prepare_prompt(input_ids, attention_mask, tokenizer)
    step_context = step_context or steps.step_context
    device = getattr(steps.backend, "input_device", None)
    if device is not None and isinstance(ids, torch.Tensor) and ids.device != device:
        # the loop keeps its buffers next to the ids: put them where the model runs
        ids = ids.to(device)
        mask = mask.to(device) if isinstance(mask, torch.Tensor) else mask
    if stream:
        if streamer is not None:
            raise ValueError(
                "use either stream=True (an iterator) or streamer= (a callback), not both."
            )
        return stream_decode(
            steps.backend,
            ids,
            mask,
            options,
            generator=generator,
            tokenizer=tokenizer,
            step_context=step_context,
        )
    with (step_context or contextlib.nullcontext)():
        result = decode(
            steps.backend,
            ids,
            mask,
            options,
            generator=generator,
            streamer=_with_text(streamer, tokenizer),
        )
    return result if return_result else result.sequences


def run_keywords(steps: Steps, scope: dict[str, Any]) -> Any:
    """The body :func:`diag.generate` and :func:`diag.onnx_generate` share: the decoding
    options of ``scope`` (the caller's ``locals()``: its written-out options, ``kwargs``
    and ``generation_config``) resolved once over ``steps.defaults``, then
    :func:`run_generation` with the prompt and its other keywords found there.

    >>> from diag.generation.steps import open_steps
    >>> from diag.models import get_untrained_model_with_inputs
    >>> steps = open_steps(get_untrained_model_with_inputs("llama")["model"])
    >>> scope = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": None,
    ...          "generation_config": None, "max_new_tokens": 2, "kwargs": {}}
    >>> run_keywords(steps, scope).shape
    torch.Size([1, 5])
    """
    options = resolve_options(
        scope["generation_config"], steps.defaults, **named_options(scope), **scope["kwargs"]
    )
    run = {name: scope[name] for name in _RUN_KEYWORDS if name in scope}
    return run_generation(steps, scope["input_ids"], scope["attention_mask"], options, **run)


def _with_text(streamer: Any, tokenizer: Any | None) -> Any:
    """A plain callback gets the text deltas too when a tokenizer is known, as the
    events of a stream do; a transformers streamer (``put``/``end``) decodes itself."""
    if streamer is None or tokenizer is None or hasattr(streamer, "put") or not callable(streamer):
        return streamer
    deltas = TextDeltas(tokenizer)

    def callback(event: StepEvent) -> None:
        streamer(deltas.annotate(event))

    return callback


#: the keywords of :func:`run_generation` that :func:`run_keywords` passes on
_RUN_KEYWORDS = [
    name
    for name, p in inspect.signature(run_generation).parameters.items()
    if p.kind is p.KEYWORD_ONLY
]

__all__ = ["run_generation", "run_keywords"]
