"""A graph seen as an ``onnxruntime.InferenceSession`` shows it: its inputs (the
initializers left out, as a session does), its outputs, each with a name, a type
spelled as ``NodeArg.type`` and a shape, and its metadata.
:func:`~diag.contract.read.read_contract`, the layout's detection and the metadata
readers take either, so a graph read from its file (without its weights) is checked
before any session is made.

Example::

    >>> import onnx
    >>> x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    >>> graph = onnx.helper.make_graph([], "g", [x], [x])
    >>> view = GraphView(onnx.helper.make_model(graph))
    >>> [(i.name, i.type, i.shape) for i in view.get_inputs()]
    [('x', 'tensor(float)', ['batch', 4])]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from diag.helpers.dtypes import _BY_ORT

# the spelling of NodeArg.type for each ONNX element type, which read_contract parses
_ORT_TYPE = {v: k for k, v in _BY_ORT.items()}


class _ValueInfo:
    """What a session's ``get_inputs()`` item gives, from a graph's value info."""

    def __init__(self, info: onnx.ValueInfoProto):
        self.name = info.name
        t = info.type.tensor_type
        if info.type.HasField("tensor_type"):
            self.type = _ORT_TYPE.get(t.elem_type, f"tensor(type {t.elem_type})")
            self.shape: list[Any] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in t.shape.dim
            ]
        else:
            self.type, self.shape = "sequence", []


@dataclass(frozen=True)
class _ModelMeta:
    """What ``session.get_modelmeta()`` gives that diag reads: the metadata entries."""

    custom_metadata_map: dict[str, str]


class GraphView:
    """The inputs, outputs and metadata of ``model`` as a session gives them."""

    def __init__(self, model: onnx.ModelProto):
        # a session takes an input that has an initializer as a weight, not as an input
        weights = {t.name for t in model.graph.initializer}
        self._inputs = [_ValueInfo(i) for i in model.graph.input if i.name not in weights]
        self._outputs = [_ValueInfo(o) for o in model.graph.output]
        self._meta = _ModelMeta({p.key: p.value for p in model.metadata_props})

    def get_inputs(self) -> list[_ValueInfo]:
        return self._inputs

    def get_outputs(self) -> list[_ValueInfo]:
        return self._outputs

    def get_modelmeta(self) -> _ModelMeta:
        return self._meta


__all__ = ["GraphView"]
