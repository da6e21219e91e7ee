"""diag.export.make.rewrite.attention_3d: Attention and RotaryEmbedding read the
``[batch, seq, heads * head_dim]`` projections directly, and the refusals say why."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from diag.export.make.rewrite import explain, fuse_decoder

HEADS_FIRST = {"perm": [0, 2, 1, 3]}


def _graph(graphs, rows_shape=(1, 1, 3, 1), static_heads: bool = True) -> ir.Model:
    """2 query heads and 1 key/value head of size 4 on 3 positions: q and k rotated,
    the attention scaled by ``rows`` and merged back to ``[1, 3, 8]``."""
    q3, k3, v3 = (
        graphs.value("q3", [1, 3, 8]),
        graphs.value("k3", [1, 3, 4]),
        graphs.value("v3", [1, 3, 4]),
    )
    cos, sin = graphs.value("cos", [1, 3, 2]), graphs.value("sin", [1, 3, 2])
    rows = graphs.value("rows", list(rows_shape))
    nodes, heads = [], []
    for x3, n in ((q3, 2), (k3, 1), (v3, 1)):
        shape = graphs.const(f"{x3.name}_shape", np.array([1, 3, n, 4], dtype=np.int64))
        nodes.append(ir.node("Reshape", [x3, shape]))
        nodes[-1].outputs[0].shape = ir.Shape([1, 3, n if static_heads else "heads", 4])
        nodes.append(ir.node("Transpose", [nodes[-1].outputs[0]], attributes=HEADS_FIRST))
        heads.append(nodes[-1].outputs[0])
    for i in (0, 1):
        nodes.append(
            ir.node("RotaryEmbedding", [heads[i], cos, sin], attributes={"interleaved": 0})
        )
        heads[i] = nodes[-1].outputs[0]
    nodes.append(ir.node("Attention", heads, name="attention"))
    nodes.append(ir.node("Mul", [nodes[-1].outputs[0], rows]))
    nodes.append(ir.node("Transpose", [nodes[-1].outputs[0]], attributes=HEADS_FIRST))
    merged = graphs.const("merged", np.array([1, 3, 8], dtype=np.int64))
    nodes.append(ir.node("Reshape", [nodes[-1].outputs[0], merged], name="merge"))
    out = nodes[-1].outputs[0]
    out.shape = ir.Shape([1, 3, 8])
    return graphs.model([q3, k3, v3, cos, sin, rows], [out], nodes)


def _feeds(rows_shape=(1, 1, 3, 1)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    shapes = {"q3": (1, 3, 8), "k3": (1, 3, 4), "v3": (1, 3, 4), "cos": (1, 3, 2)}
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    feeds["sin"] = np.sqrt(1 - np.clip(feeds["cos"], -1, 1) ** 2).astype(np.float32)
    feeds["cos"] = np.clip(feeds["cos"], -1, 1)
    feeds["rows"] = (rng.random(rows_shape) > 0.3).astype(np.float32)
    return feeds


def test_attention_3d_drops_the_heads_views(graphs):
    model = _graph(graphs)
    expected = graphs.run(model, _feeds())[0]
    assert fuse_decoder(model, ["attention_3d"]) == {"attention_3d": 1}
    assert sorted(graphs.ops(model)) == [
        "Attention",
        "Mul",
        "RotaryEmbedding",
        "RotaryEmbedding",
        "Squeeze",
    ]
    attention = next(n for n in model.graph if n.op_type == "Attention")
    assert attention.attributes["q_num_heads"].value == 2
    assert attention.attributes["kv_num_heads"].value == 1
    assert [
        n.attributes["num_heads"].value for n in model.graph if n.op_type == "RotaryEmbedding"
    ] == [2, 1]
    # rounding of these few-term float32 sums (values ~1) is ~1e-6 on any kernel; a wrong
    # fusion moves them by their own size
    np.testing.assert_allclose(graphs.run(model, _feeds())[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"rows_shape": (1, 2, 3, 1)}, "'rows' does not scale rows ([b, 1, s, 1])"),
        ({"static_heads": False}, "the number of query heads ("),
    ],
)
def test_attention_3d_refuses_and_says_why(graphs, kwargs, reason):
    model = _graph(graphs, **kwargs)
    reasons = explain(model, ["attention_3d"])["attention_3d"]
    assert any(r.startswith("merge (Reshape)") and reason in r for r in reasons), reasons
    if not kwargs.get("static_heads", True):
        assert any("[1,3,heads,4]) is not static" in r for r in reasons), reasons
    assert fuse_decoder(model, ["attention_3d"]) == {"attention_3d": 0}
    assert graphs.ops(model).count("Transpose") == 4
