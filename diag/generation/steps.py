"""The one door into generation: what the user holds, opened into :class:`Steps`.

:func:`open_steps` takes a transformers causal LM, an ONNX file or folder (diag's
export or another exporter's, :mod:`diag.contract.detect`), an ``onnx.ModelProto``,
an ``onnx_ir.Model``, an ``onnxruntime.InferenceSession``, any step backend, or
:class:`Steps` already, and returns one object: the backend that runs the steps, the
generation defaults that stand for ``model.generation_config`` and where it came from.
:func:`diag.generate`, :func:`diag.onnx_generate`, :mod:`diag.testing`,
:mod:`diag.diagnose` and the command line all open what they are given here. ONNX
Runtime is imported only when an ONNX model is opened.

>>> from diag.models import get_untrained_model_with_inputs
>>> steps = open_steps(get_untrained_model_with_inputs("llama")["model"])
>>> steps.kind, steps.label, open_steps(steps) is steps
('torch', 'torch LlamaForCausalLM', True)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from diag.generation.backend import StepBackend, is_step_backend
from diag.generation.torch_backend import TorchBackend
from diag.helpers.torch_helper import single_torch_thread

#: the packages whose objects ONNX Runtime opens (a ModelProto, an onnx_ir.Model, a
#: session, diag's ONNX Runtime backend): told apart by module, so that opening a
#: torch model never imports them
_ONNX_MODULES = ("onnx", "onnx_ir", "onnxruntime", "diag.ort")


@dataclass(frozen=True)
class Steps:
    """What runs the steps of a generation, with its defaults and provenance."""

    #: the :class:`~diag.generation.backend.StepBackend`
    backend: StepBackend
    #: what ``model.generate`` falls back on: the torch model's generation config, the
    #: ONNX model's side files or metadata (a dict), or None
    defaults: Any
    #: ``torch``, ``onnx`` or ``backend`` (a step backend given as it is)
    kind: str
    #: what it is, for messages: ``torch LlamaForCausalLM``, ``onnx model.onnx``
    label: str
    #: the name of the argument it came from (``reference``, ``candidate``...)
    name: str = "model"
    #: the torch model (kind ``torch``)
    model: torch.nn.Module | None = None
    #: the ONNX graph when known (kind ``onnx``): its file, or the ModelProto
    onnx_model: Any = None
    #: entered around each step (a context manager factory), or None
    step_context: Callable[[], AbstractContextManager[Any]] | None = None


def is_onnx_model(obj: Any) -> bool:
    """True for what ONNX Runtime opens: a path, an ``onnx.ModelProto``, an
    ``onnx_ir.Model``, an ``InferenceSession`` or diag's ONNX Runtime backend.

    >>> is_onnx_model("model.onnx"), is_onnx_model(42)
    (True, False)
    """
    if isinstance(obj, (str, os.PathLike)):
        return True
    # by the classes' modules, a subclass (of OrtBackend, of InferenceSession) included
    modules = [cls.__module__ for cls in type(obj).__mro__]
    return any(m == o or m.startswith(o + ".") for m in modules for o in _ONNX_MODULES)


def _open_onnx(
    obj: Any, what: str, providers: Any, session_options: Any, vocab_size: Any, layout: Any
) -> Steps:
    """:class:`Steps` over an ONNX model, opened by :func:`diag.ort.open.open_ort_backend`
    (which also checks the ``providers`` of Steps opened already), labelled by it."""
    if isinstance(obj, (str, os.PathLike)) and not os.path.exists(obj):
        raise FileNotFoundError(
            f"{what}: no ONNX file at {os.fspath(obj)!r}; export one with diag.export_causal_lm."
        )
    from diag.ort.open import open_ort_backend

    if isinstance(obj, Steps):
        open_ort_backend(obj.backend, providers)  # refuses other providers
        return obj
    backend = open_ort_backend(
        obj, providers, layout=layout, session_options=session_options, vocab_size=vocab_size
    )
    return Steps(
        backend,
        backend.generation_defaults,
        "onnx",
        backend.label,
        name=what,
        onnx_model=backend.source,
        # small [batch, vocab] torch ops between two runtime calls: one torch thread
        step_context=single_torch_thread,
    )


def open_steps(
    obj: Any,
    *,
    providers: Any = None,
    session_options: Any = None,
    vocab_size: int | None = None,
    layout: Any = None,
    what: str = "model",
) -> Steps:
    """:class:`Steps` over ``obj`` (see the module for what it takes).

    ``providers``, ``session_options``, ``vocab_size`` and ``layout`` (a
    :class:`~diag.contract.layout.Layout` or a mapping of fields overriding the detected
    one) apply to an ONNX model (:func:`diag.ort.open.open_ort_backend`); ``what`` names
    the argument in error messages and becomes :attr:`Steps.name`.

    >>> open_steps(42, what="candidate")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: candidate must be a transformers causal LM (torch.nn.Module), ...
    """
    if isinstance(obj, Steps) and (obj.kind != "onnx" or providers is None):
        return obj
    # what obj is, told here first; then one branch opens it (an OrtBackend is a step
    # backend too: opened as ONNX, where its providers are checked)
    onnx = isinstance(obj, Steps) or is_onnx_model(obj)
    step_backend = not onnx and is_step_backend(obj)
    if onnx:
        return _open_onnx(obj, what, providers, session_options, vocab_size, layout)
    if step_backend:
        defaults = getattr(obj, "generation_defaults", None)
        return Steps(obj, defaults, "backend", type(obj).__name__, name=what)
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(
            f"{what} must be a transformers causal LM (torch.nn.Module), a path to an .onnx "
            "file or a folder, an onnx.ModelProto, an onnx_ir.Model, an "
            "onnxruntime.InferenceSession, the session returned by onnx_generate(..., "
            "return_session=True) or a StepBackend (prefill, decode and a vocab_size, see "
            f"diag.generation.backend), got {type(obj).__name__}."
        )
    label = f"torch {type(obj).__name__}"
    defaults = getattr(obj, "generation_config", None)
    return Steps(TorchBackend(obj), defaults, "torch", label, name=what, model=obj)


__all__ = ["Steps", "is_onnx_model", "open_steps"]
