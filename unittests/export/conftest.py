"""Helpers of the fusion tests (unittests/export/make/rewrite/test_*.py): small graphs
built by hand with onnx-ir, run with ONNX Runtime."""

from __future__ import annotations

import types

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _value(name: str, shape: list, dtype: ir.DataType = ir.DataType.FLOAT) -> ir.Value:
    return ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype))


def _const(name: str, array) -> ir.Value:
    tensor = ir.tensor(np.asarray(array))
    return ir.Value(
        name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype),
        const_value=tensor,
    )  # fmt: skip


def _model(inputs, outputs, nodes, opset: int = 23) -> ir.Model:
    """A model of ``nodes``; the constants they read become initializers and
    outputs without a type are float."""
    initializers = {}
    for node in nodes:
        for value in node.inputs:
            if value is not None and value.const_value is not None:
                initializers[value.name] = value
        for value in node.outputs:
            value.type = value.type or FLOAT
    for i, value in enumerate(outputs):
        value.name = value.name or f"y{i}"
    graph = ir.Graph(
        inputs, outputs, nodes=nodes, initializers=list(initializers.values()),
        opset_imports={"": opset},
    )  # fmt: skip
    return ir.Model(graph, ir_version=10)


def _session(model: ir.Model) -> ort.InferenceSession:
    proto = ir.serde.serialize_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return _session(model).run(None, feeds)


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


@pytest.fixture(scope="session")
def graphs():
    """``value``, ``const``, ``model``, ``session``, ``run``, ``ops``: the builders."""
    return types.SimpleNamespace(
        value=_value, const=_const, model=_model, session=_session, run=_run, ops=_ops
    )
