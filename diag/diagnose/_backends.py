"""Turns what a user has (a torch model, an ONNX file, a session) into the two
:class:`~diag.generation.backend.StepBackend` objects the diagnosis compares.

Example::

    torch_backend, ort_backend = make_backends(model, "model.onnx")
"""

from __future__ import annotations

import os
from typing import Any

import torch


def _is_step_backend(obj: Any) -> bool:
    return callable(obj) and hasattr(obj, "vocab_size") and not isinstance(obj, torch.nn.Module)


def make_torch_backend(model: Any) -> Any:
    """A :class:`~diag.generation.torch_backend.TorchBackend` over ``model`` (a
    transformers causal LM), or ``model`` itself when it already is a backend."""
    from diag.generation.torch_backend import TorchBackend

    if isinstance(model, torch.nn.Module):
        return TorchBackend(model)
    if _is_step_backend(model):
        return model
    raise TypeError(
        "the torch side must be a transformers causal LM (torch.nn.Module) or a StepBackend, "
        f"got {type(model).__name__}."
    )


def make_ort_backend(onnx_model_or_session: Any, providers: Any = None) -> Any:
    """An :class:`~diag.ort.backend.OrtBackend` over a path, an ``onnx.ModelProto``, an
    ``onnxruntime.InferenceSession``, or the backend itself."""
    import onnx
    import onnxruntime as ort

    from diag.ort.backend import OrtBackend
    from diag.ort.session import make_session

    obj = onnx_model_or_session
    if isinstance(obj, OrtBackend) or (
        _is_step_backend(obj) and not isinstance(obj, ort.InferenceSession)
    ):
        return obj
    if isinstance(obj, ort.InferenceSession):
        return OrtBackend(obj)
    if isinstance(obj, (str, os.PathLike, onnx.ModelProto)):
        return OrtBackend(make_session(obj, providers))
    raise TypeError(
        "the ONNX side must be a path to an .onnx file, an onnx.ModelProto, an "
        f"onnxruntime.InferenceSession or an OrtBackend, got {type(obj).__name__}."
    )


def make_backends(model: Any, onnx_model_or_session: Any, providers: Any = None) -> tuple[Any, Any]:
    """``(torch backend, onnx runtime backend)``, each with its own cache."""
    return make_torch_backend(model), make_ort_backend(onnx_model_or_session, providers)
