"""The generation front both public functions share.

:func:`diag.generate` and :func:`diag.onnx_generate` only build a backend (a
:class:`~diag.generation.backend.StepBackend`: inputs and cache in, logits and cache
out) and the defaults that stand for ``model.generation_config``; then they call
:func:`run_generation`, which owns the rest: the prompt
(:func:`~diag.generation.prompt.prepare_prompt`), the options
(:func:`~diag.generation.options.resolve_options`, with the :data:`UNSET` rule), the
two ways to stream and what is returned::

    diag.generate(model, ids, **kw)          -> run_generation(TorchBackend(model), ids, ...,
                                                   defaults=model.generation_config, **kw)
    diag.onnx_generate(path, ids, **kw)      -> run_generation(get_backend(path), ids, ...,
                                                   defaults=<the model's metadata>, **kw)
    run_generation -> prepare_prompt, resolve_options -> decode | stream_decode
                   -> iter_decode (the loop, decoding.py) -> GenerateResult

The keyword parameters the two functions share are declared once, here: the decoding
options of :data:`NAMED_OPTIONS` (typed as the :class:`DecodingOptions` fields, default
:data:`UNSET`) and the keyword-only parameters of :func:`run_generation`.
:func:`generation_front` writes them into the signature of each public function, which
takes them as ``**options`` and passes them on: ``help()``, ``inspect.signature`` and
the API pages list every one of them, and no second copy can drift.

>>> import inspect
>>> list(inspect.signature(run_generation).parameters)[:5]
['backend', 'input_ids', 'attention_mask', 'defaults', 'step_context']
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch

from diag.generation.backend import StepBackend
from diag.generation.decoding import StepEvent, decode
from diag.generation.options import UNSET, DecodingOptions, resolve_options
from diag.generation.prompt import prepare_prompt
from diag.generation.result import GenerateResult
from diag.generation.streaming import GenerationStream, TextDeltas, stream_decode

#: the decoding options :func:`diag.generate` and :func:`diag.onnx_generate` name in
#: their signatures, in that order; the other ``GenerationConfig`` names
#: (``min_new_tokens``, ``no_repeat_ngram_size``, ``max_length``...) go through
#: ``**kwargs``. Each is a :class:`DecodingOptions` field.
NAMED_OPTIONS = (
    "max_new_tokens",
    "eos_token_id",
    "pad_token_id",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "num_return_sequences",
    "output_scores",
    "output_logits",
)


def run_generation(
    backend: StepBackend,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    defaults: Any = None,
    step_context: Callable[[], AbstractContextManager[Any]] | None = None,
    *,
    generator: torch.Generator | None = None,
    streamer: Any = None,
    generation_config: Any = None,
    tokenizer: Any = None,
    return_result: bool = False,
    stream: bool = False,
    **options: Any,
) -> torch.Tensor | GenerateResult | GenerationStream:
    """Generates with ``backend``: what :func:`diag.generate` and
    :func:`diag.onnx_generate` do once they hold a backend.

    ``defaults`` (a ``GenerationConfig`` or a dict) stands for
    ``model.generation_config``: the options come from ``options`` (:data:`UNSET`: not
    given), then ``generation_config``, then ``defaults``, then transformers'.
    ``step_context`` (a context manager factory) is entered around the generation, or
    around each step of a stream. The other parameters are those of
    :func:`diag.generate`.

    >>> from diag.generation.torch_backend import TorchBackend
    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> res = run_generation(TorchBackend(model), ids, max_new_tokens=4, return_result=True)
    >>> res.sequences.shape, res.finish_reasons
    (torch.Size([1, 7]), ['length'])
    """
    ids, mask = prepare_prompt(input_ids, attention_mask, tokenizer)
    decoding = resolve_options(generation_config, defaults, **options)
    device = getattr(backend, "input_device", None)
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
            backend,
            ids,
            mask,
            decoding,
            generator=generator,
            tokenizer=tokenizer,
            step_context=step_context,
        )
    with (step_context or contextlib.nullcontext)():
        result = decode(
            backend,
            ids,
            mask,
            decoding,
            generator=generator,
            streamer=_with_text(streamer, tokenizer),
        )
    return result if return_result else result.sequences


def _with_text(streamer: Any, tokenizer: Any | None) -> Any:
    """A plain callback gets the text deltas too when a tokenizer is known, as the
    events of a stream do; a transformers streamer (``put``/``end``) decodes itself."""
    if streamer is None or tokenizer is None or hasattr(streamer, "put") or not callable(streamer):
        return streamer
    deltas = TextDeltas(tokenizer)

    def callback(event: StepEvent) -> None:
        streamer(deltas.annotate(event))

    return callback


def shared_parameters() -> list[inspect.Parameter]:
    """The keyword parameters of :func:`diag.generate` and :func:`diag.onnx_generate`
    that :func:`generation_front` adds: the :data:`NAMED_OPTIONS` (their
    :class:`DecodingOptions` type, :data:`UNSET` by default), then the keyword-only
    parameters of :func:`run_generation`.

    >>> [str(p) for p in shared_parameters()][5]
    "top_k: 'int | None' = UNSET"
    """
    # the annotations as written (strings, like those of the functions' own parameters)
    hints = {f.name: f.type for f in dataclasses.fields(DecodingOptions)}
    named = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=UNSET, annotation=hints[name])
        for name in NAMED_OPTIONS
    ]
    run = inspect.signature(run_generation).parameters.values()
    return named + [p for p in run if p.kind is inspect.Parameter.KEYWORD_ONLY]


F = TypeVar("F", bound=Callable[..., Any])


def generation_front(function: F) -> F:
    """Declares ``function`` a generation front: it takes the shared keywords as
    ``**options`` and passes them to :func:`run_generation`; its signature
    (``inspect.signature``, ``help``, the API pages) lists them after its own
    parameters, then ``**kwargs`` for the other ``GenerationConfig`` names.

    >>> @generation_front
    ... def my_generate(model, input_ids, attention_mask=None, **options):
    ...     ...
    >>> sig = inspect.signature(my_generate)
    >>> str(sig.parameters["max_new_tokens"]), str(sig.parameters["stream"])
    ("max_new_tokens: 'int | None' = UNSET", "stream: 'bool' = False")
    """
    own = inspect.signature(function)
    params = list(own.parameters.values())
    if not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
        raise TypeError(
            f"{function.__name__} must end with **options, which it passes to run_generation."
        )
    shared = shared_parameters()
    clash = sorted({p.name for p in params} & {p.name for p in shared})
    if clash:
        raise TypeError(
            f"{function.__name__} declares {clash}, which generation_front adds; remove them."
        )
    kwargs = params[-1].replace(name="kwargs")
    function.__signature__ = own.replace(parameters=[*params[:-1], *shared, kwargs])  # type: ignore[attr-defined]
    return function
