"""One step backend from whatever a user holds: a torch model, an ONNX model or session,
or a backend already.

The tools that run two sides step by step (:mod:`diag.diagnose`) take either side as
a transformers causal LM, an ONNX file, an ``onnx.ModelProto`` / ``onnx_ir.Model``, an
``onnxruntime.InferenceSession`` or any :class:`~diag.generation.backend.StepBackend`;
this is the one place that turns each into a backend. It sits on the ONNX Runtime side
because that side already depends on the torch one (:mod:`diag.generation`), not the
other way round.

Example::

    torch_side = as_step_backend(model)          # a TorchBackend
    onnx_side = as_step_backend("model.onnx")    # an OrtBackend (see get_backend)
    as_step_backend(onnx_side) is onnx_side      # True
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
import torch

from diag.generation.torch_backend import TorchBackend
from diag.ort.backend import OrtBackend
from diag.ort.generate import get_backend, is_onnx_model
from diag.ort.session import Providers


def _is_step_backend(obj: Any) -> bool:
    # the StepBackend protocol: a callable with a vocab_size (a torch module is callable
    # and may have that attribute, but runs a whole forward, not a step)
    return callable(obj) and hasattr(obj, "vocab_size") and not isinstance(obj, torch.nn.Module)


def as_step_backend(obj: Any, providers: Providers = None, *, what: str = "model") -> Any:
    """A :class:`~diag.generation.backend.StepBackend` over ``obj``.

    * a ``torch.nn.Module`` (a transformers causal LM): a
      :class:`~diag.generation.torch_backend.TorchBackend`;
    * a path, an ``onnx.ModelProto``, an ``onnx_ir.Model``, an ``InferenceSession`` or
      an :class:`~diag.ort.backend.OrtBackend`: what :func:`diag.ort.get_backend` makes
      of it (``providers`` picks the providers of a new session);
    * any other StepBackend: ``obj`` itself.

    ``what`` names the argument in the error message.

    >>> as_step_backend(42, what="onnx_model_or_session")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: onnx_model_or_session must be a transformers causal LM (torch.nn.Module), ...
    """
    if isinstance(obj, torch.nn.Module):
        return TorchBackend(obj)
    if isinstance(obj, (OrtBackend, ort.InferenceSession)) or is_onnx_model(obj):
        return get_backend(obj, providers)
    if _is_step_backend(obj):
        return obj
    raise TypeError(
        f"{what} must be a transformers causal LM (torch.nn.Module), a path to an .onnx "
        "file, an onnx.ModelProto, an onnx_ir.Model, an onnxruntime.InferenceSession or a "
        "StepBackend (a callable with a vocab_size, see diag.generation.backend), got "
        f"{type(obj).__name__}."
    )


__all__ = ["as_step_backend"]
