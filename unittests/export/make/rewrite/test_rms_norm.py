"""diag.export.make.rewrite.rms_norm: onnxscript's RMSNorm rules on diag's pattern."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from diag.export.make.rewrite import explain, fuse_decoder
from diag.helpers.rounding import accumulation_tolerance


def _rms_graph(graphs, exponent: float, axis: int) -> ir.Model:
    x = graphs.value("x", [2, 3, 8])
    nodes = [ir.node("Pow", [x, graphs.const("two", np.array(exponent, dtype=np.float32))])]
    axes = graphs.const("axes", np.array([axis], dtype=np.int64))
    nodes.append(
        ir.node(
            "ReduceMean",
            [nodes[-1].outputs[0], axes],
            attributes={"keepdims": 1, "noop_with_empty_axes": 0},
        )
    )
    eps = graphs.const("eps", np.array(1e-6, dtype=np.float32))
    nodes.append(ir.node("Add", [nodes[-1].outputs[0], eps]))
    nodes.append(ir.node("Sqrt", [nodes[-1].outputs[0]]))
    nodes.append(ir.node("Reciprocal", [nodes[-1].outputs[0]]))
    nodes.append(ir.node("Mul", [x, nodes[-1].outputs[0]]))
    w = graphs.const("w", np.linspace(0.5, 1.5, 8).astype(np.float32))
    nodes.append(ir.node("Mul", [w, nodes[-1].outputs[0]], name="scale"))
    return graphs.model([x], [nodes[-1].outputs[0]], nodes)


def test_rms_norm_fuses_the_rms_pattern(graphs):
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    model = _rms_graph(graphs, 2.0, -1)
    expected = graphs.run(model, {"x": x})[0]
    assert explain(model, ["rms_norm"]) == {"rms_norm": []}
    assert fuse_decoder(model, ["rms_norm"]) == {"rms_norm": 1}
    assert graphs.ops(model) == ["RMSNormalization"]
    node = next(iter(model.graph))
    assert node.attributes["epsilon"].value == np.float32(1e-6)
    assert node.attributes["axis"].value == -1
    # a mean of squares over the hidden size, then four roundings (sqrt, reciprocal, two
    # products), relative to the output: within 2 * gamma(hidden + 4) of it
    atol = accumulation_tolerance(x.shape[-1] + 4, float(np.abs(expected).max()))
    np.testing.assert_allclose(graphs.run(model, {"x": x})[0], expected, rtol=0, atol=atol)


def test_rms_norm_refuses_a_cube_or_another_axis_and_says_why(graphs):
    for exponent, axis, reason in ((3.0, -1, "expected 2.0, got 3.0"), (2.0, 1, "expected [-1]")):
        model = _rms_graph(graphs, exponent, axis)
        reasons = explain(model, ["rms_norm"])["rms_norm"]
        assert any(reason in r and r.startswith("scale (Mul)") for r in reasons), reasons
        assert fuse_decoder(model, ["rms_norm"]) == {"rms_norm": 0}
        assert "RMSNormalization" not in graphs.ops(model)
