"""The ``:param`` lines that :func:`diag.generate` and :func:`diag.onnx_generate` share,
written once: the decoding options (the :class:`~diag.generation.options.DecodingOptions`
fields they write out) and what the loop takes besides them.

:func:`with_parameter_docs` puts them into a docstring where it holds the line
``.. decoding parameters``, for the names of the function's signature, in its order.

>>> @with_parameter_docs
... def f(top_k=None, stream=False):
...     '''Generates.
...
...     .. decoding parameters
...     '''
>>> print(f.__doc__.strip().splitlines()[-1].strip())
:param stream: returns a :class:`~diag.generation.streaming.GenerationStream` to iterate on
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

#: the line of a docstring that :func:`with_parameter_docs` replaces
MARKER = ".. decoding parameters"

#: the shared parameters' meanings, in GenerationConfig's words where it has them
PARAMETERS: dict[str, str] = {
    "max_new_tokens": "the most tokens generated per sequence",
    "eos_token_id": "the token(s) ending a sequence",
    "pad_token_id": "the token written after a sequence ended",
    "do_sample": "samples the next token instead of taking the most likely one",
    "temperature": "divides the logits before sampling",
    "top_k": "samples among the ``top_k`` most likely tokens",
    "top_p": "samples among the most likely tokens whose probabilities sum to ``top_p``",
    "repetition_penalty": "lowers the logits of the tokens already in the sequence",
    "num_return_sequences": "the sequences generated per prompt",
    "num_beams": "the hypotheses of a beam search per prompt (1: no beam search)",
    "length_penalty": "beam search: a finished hypothesis scores its summed log-probability "
    "divided by its length to this power",
    "early_stopping": "beam search: True stops at ``num_beams`` finished hypotheses, False "
    'when no running one can beat them, ``"never"`` only when none can at any length',
    "output_scores": "keeps the processed logits of every step in the result",
    "output_logits": "keeps the raw logits of every step in the result",
    "generator": "the random generator of sampling (None: the global one)",
    "streamer": "called with each step's event, or a transformers streamer",
    "generation_config": "a ``GenerationConfig`` whose values replace the model's defaults "
    "(a torch model's ``generation_config``, an ONNX model's side files or metadata)",
    "tokenizer": "encodes text prompts and decodes the events' text",
    "return_result": "returns a :class:`~diag.generation.result.GenerateResult` instead of "
    "the tokens",
    "stream": "returns a :class:`~diag.generation.streaming.GenerationStream` to iterate on",
    "kwargs": "other ``GenerationConfig`` names",
}

F = TypeVar("F", bound=Callable[..., Any])


def with_parameter_docs(fn: F) -> F:
    """``fn`` with the :data:`MARKER` line of its docstring replaced by the ``:param``
    lines of :data:`PARAMETERS` its signature names (example: the module's)."""
    doc = fn.__doc__ or ""
    lines = doc.splitlines()
    where = [i for i, line in enumerate(lines) if line.strip() == MARKER]
    if len(where) != 1:
        raise ValueError(f"{fn.__qualname__}'s docstring must hold the line {MARKER!r} once.")
    line = lines[where[0]]
    indent = line[: len(line) - len(line.lstrip())]
    names = [n for n in inspect.signature(fn).parameters if n in PARAMETERS]
    params = [f"{indent}:param {name}: {PARAMETERS[name]}" for name in names]
    fn.__doc__ = "\n".join(lines[: where[0]] + params + lines[where[0] + 1 :])
    return fn


__all__ = ["MARKER", "PARAMETERS", "with_parameter_docs"]
