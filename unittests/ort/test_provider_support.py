"""Nodes a provider has no kernel for, found from the graph and ONNX Runtime's kernel
registry, and the session refused with the dtype, the provider and the fix."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from diag.ort.provider_support import (
    ProviderSupportError,
    check_provider_support,
    unsupported_nodes,
)
from diag.ort.session import make_session

pytestmark = pytest.mark.pinned  # ONNX Runtime's kernels over a hand-built graph


def _graph(op: str, elem: int, domain: str = "", opset: int = 18) -> onnx.ModelProto:
    node = helper.make_node(op, ["a", "b"], ["c"], name="n", domain=domain)
    inputs = [helper.make_tensor_value_info(n, elem, [2, 2]) for n in "ab"]
    output = helper.make_tensor_value_info("c", elem, [2, 2])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", inputs, [output]), opset_imports=opsets)


@pytest.mark.parametrize("op", ["MatMul", "Add", "Mul"])
def test_bfloat16_arithmetic_has_no_cpu_kernel(op):
    found = unsupported_nodes(_graph(op, TensorProto.BFLOAT16))
    assert [(u.op_type, u.name, u.dtype) for u in found] == [(op, "n", "bfloat16")]


def test_bfloat16_data_movement_runs():
    node = helper.make_node("Concat", ["a", "b"], ["c"], axis=0, name="n")
    inputs = [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [2, 2]) for n in "ab"]
    output = helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [4, 2])
    model = helper.make_model(
        helper.make_graph([node], "g", inputs, [output]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    assert unsupported_nodes(model) == []
    make_session(model)  # opens


def test_float16_runs_on_the_cpu_through_float32():
    """The CPU provider has no float16 MatMul kernel of its own but inserts casts."""
    model = _graph("MatMul", TensorProto.FLOAT16)
    assert unsupported_nodes(model) == []
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float16)
    (c,) = make_session(model).run(None, {"a": a, "b": a})
    np.testing.assert_array_equal(c, a @ a)  # small integers: exact in float16


def test_unknown_ops_are_left_to_the_session():
    assert unsupported_nodes(_graph("MyOp", TensorProto.BFLOAT16, domain="my.domain")) == []


def test_session_of_a_bfloat16_graph_is_refused_with_the_fix():
    model = _graph("MatMul", TensorProto.BFLOAT16)
    with pytest.raises(ProviderSupportError) as info:
        make_session(model)
    message = str(info.value)
    assert "bfloat16" in message and "CPUExecutionProvider" in message and "MatMul (n)" in message
    assert "dtype='float32'" in message and "CUDAExecutionProvider" in message
    assert "NOT_IMPLEMENTED" in str(info.value.__cause__)  # ONNX Runtime's own refusal
    with pytest.raises(ProviderSupportError, match="bfloat16"):
        check_provider_support(model)
