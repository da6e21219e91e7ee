"""diag.export.make.rewrite.gather_positions: the kept positions gathered in one Gather,
and the refusals say why."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from diag.export.make.rewrite import explain, fuse_decoder


def _graph(graphs, perm=(1, 0, 2), axes=(-1,), batch_dims=0):
    """``Transpose(GatherND(Transpose(x), Unsqueeze(keep, axes)))``, as the exporter
    writes ``hidden[:, keep, :]``."""
    x = graphs.value("x", [2, 5, 4])
    keep = graphs.value("keep", [3], ir.DataType.INT64)
    unsq = ir.node("Unsqueeze", [keep, graphs.const("axes", np.array(axes, dtype=np.int64))])
    unsq.outputs[0].type = ir.TensorType(ir.DataType.INT64)
    t1 = ir.node("Transpose", [x], attributes={"perm": [1, 0, 2]})
    gnd = ir.node("GatherND", [t1.outputs[0], unsq.outputs[0]], attributes={"batch_dims": batch_dims}, name="gnd")
    t2 = ir.node("Transpose", [gnd.outputs[0]], attributes={"perm": list(perm)}, name="back")
    t2.outputs[0].name = "y"
    return graphs.model([x, keep], [t2.outputs[0]], [unsq, t1, gnd, t2])


def _feeds():
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    return {"x": x, "keep": np.array([4, 0, 4], dtype=np.int64)}


def test_one_gather_on_the_positions_axis(graphs):
    model = _graph(graphs)
    feeds = _feeds()
    expected = graphs.run(model, feeds)[0]
    np.testing.assert_array_equal(expected, feeds["x"][:, [4, 0, 4]])
    assert fuse_decoder(model, ["gather_positions"]) == {"gather_positions": 1}
    assert graphs.ops(model) == ["Gather"]
    np.testing.assert_array_equal(graphs.run(model, feeds)[0], expected)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"perm": (0, 2, 1)}, "a Transpose has perm [0, 2, 1], not [1, 0, 2]"),
        ({"axes": (0,)}, "the positions are not a 1-D tensor unsqueezed on its last axis"),
    ],
)
def test_refuses_and_says_why(graphs, kwargs, reason):
    model = _graph(graphs, **kwargs)
    assert explain(model, ["gather_positions"]) == {
        "gather_positions": [f"back (Transpose): {reason} [GatherPositions]"]
    }
    assert fuse_decoder(model, ["gather_positions"]) == {"gather_positions": 0}
