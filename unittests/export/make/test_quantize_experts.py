"""quantize_expert_tables on a hand-made expert table: the op gathers the chosen
experts dequantized as numpy dequantizes them, within the quantization step."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from diag.export.make.quantize_experts import quantize_expert_tables

# pinned: ONNX / ONNX Runtime logic over a hand-made graph, no transformers model
pytestmark = pytest.mark.pinned


def _gather_graph(table: np.ndarray):
    g = helper.make_graph(
        [helper.make_node("Gather", ["w", "ids"], ["y"], name="experts")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "w")],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("bits", [4, 8])
def test_gathered_experts_are_the_dequantized_table(bits):
    block = 32
    table = np.random.default_rng(bits).standard_normal((4, 8, 64)).astype(np.float32)
    model = _gather_graph(table)
    assert quantize_expert_tables(model, bits=bits, block_size=block) == 1
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    ids = np.array([3, 0, 3], dtype=np.int64)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids}
    )[0]
    # symmetric: each value within half a step of its block's scale (max |w| / levels)
    levels = 2 ** (bits - 1) - 1
    step = np.abs(table.reshape(4, 8, 2, block)).max(-1, keepdims=True) / levels
    bound = np.broadcast_to(step / 2, (4, 8, 2, block)).reshape(4, 8, 64)[ids]
    assert got.shape == (3, 8, 64)
    assert (np.abs(got - table[ids]) <= bound * (1 + 1e-6)).all()
    assert not np.array_equal(got, table[ids])


def test_tables_that_do_not_fit_stay_float():
    # last axis not a multiple of the block size: the op does not pad
    model = _gather_graph(np.ones((2, 3, 40), np.float32))
    assert quantize_expert_tables(model, bits=4, block_size=32) == 0
    assert model.graph.node[0].op_type == "Gather"


def test_the_exporters_gather_nd_of_unsqueezed_ids_is_quantized():
    # table[ids] as torch.onnx writes it: GatherND(table, Unsqueeze(ids, [-1]))
    table = np.random.default_rng(0).standard_normal((4, 8, 32)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Unsqueeze", ["ids", "axes"], ["idx"]),
         helper.make_node("GatherND", ["w", "idx"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "w"), numpy_helper.from_array(np.array([-1]), "axes")],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    assert quantize_expert_tables(model, bits=8, block_size=32) == 1
    ids = np.array([1, 2], dtype=np.int64)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids}
    )[0]
    np.testing.assert_allclose(got, table[ids], atol=np.abs(table).max() / 127)
