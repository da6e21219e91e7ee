"""diag.export.make.rewrite.skip_norm: the residual sum and its RMSNormalization in one
SkipSimplifiedLayerNormalization, on graphs built for it."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from diag.export.make.rewrite import explain, fuse_decoder
from diag.helpers.rounding import accumulation_tolerance


def _residual_graph(graphs, skip_shape=(2, 3, 8), scale_shape=(8,), **attributes) -> ir.Model:
    """Two residual sums, each normalized: the first sum feeds the second one."""
    x = graphs.value("x", [2, 3, 8])
    skip = graphs.value("skip", list(skip_shape))
    rng = np.random.default_rng(1)
    scale = graphs.const("scale", rng.uniform(0.5, 1.5, scale_shape).astype(np.float32))
    scale2 = graphs.const("scale2", rng.uniform(0.5, 1.5, 8).astype(np.float32))
    first = ir.node("Add", [x, skip], name="residual")
    norm = ir.node("RMSNormalization", [first.outputs[0], scale], name="norm",
                   attributes={"epsilon": 1e-6, **attributes})  # fmt: skip
    block = ir.node("Sigmoid", [norm.outputs[0]])
    for value in (first.outputs[0], block.outputs[0]):
        value.shape = ir.Shape([2, 3, 8])  # as the exporter's shape inference says
    second = ir.node("Add", [first.outputs[0], block.outputs[0]], name="residual2")
    norm2 = ir.node("RMSNormalization", [second.outputs[0], scale2], attributes={"epsilon": 1e-5})
    nodes = [first, norm, block, second, norm2]
    return graphs.model([x, skip], [norm2.outputs[0]], nodes)


def test_skip_norm_fuses_each_sum_and_its_norm(graphs):
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((2, 3, 8)).astype(np.float32) for n in ("x", "skip")}
    model = _residual_graph(graphs)
    expected = graphs.run(model, feeds)[0]
    assert explain(model, ["skip_norm"]) == {"skip_norm": []}
    assert fuse_decoder(model, ["skip_norm"]) == {"skip_norm": 2}
    fused = [n for n in model.graph if n.op_type == "SkipSimplifiedLayerNormalization"]
    assert graphs.ops(model) == ["SkipSimplifiedLayerNormalization", "Sigmoid",
                                 "SkipSimplifiedLayerNormalization"]  # fmt: skip
    assert {n.domain for n in fused} == {"com.microsoft"}
    assert [n.attributes["epsilon"].value for n in fused] == [np.float32(1e-6), np.float32(1e-5)]
    # the first sum (4th output) is the second one's skip
    assert fused[1].inputs[0] is fused[0].outputs[3]
    # the mean and inverse std, which nothing reads, are left out (ONNX Runtime then
    # neither computes nor stores them); the last sum stays: localize_layer reads it
    proto = ir.serde.serialize_model(model)
    names = [list(n.output) for n in proto.graph.node if n.op_type.startswith("Skip")]
    assert names == [[fused[0].outputs[0].name, "", "", fused[0].outputs[3].name],
                     [fused[1].outputs[0].name, "", "", fused[1].outputs[3].name]]  # fmt: skip
    # two sums and norms in a chain, each a mean of squares over the hidden size plus five
    # roundings (the sum, sqrt, reciprocal, two products), relative to the output
    atol = accumulation_tolerance(2 * (feeds["x"].shape[-1] + 5), float(np.abs(expected).max()))
    np.testing.assert_allclose(graphs.run(model, feeds)[0], expected, rtol=0, atol=atol)


def test_skip_norm_refuses_what_the_kernel_does_not_compute_and_says_why(graphs):
    cases = (
        ({"skip_shape": (1, 3, 8)}, "the sum broadcasts"),
        ({"scale_shape": (3, 8)}, "not one weight per channel [8]"),
        ({"axis": 1}, "the norm is over axis 1"),
        ({"stash_type": 11}, "stash_type=11"),
    )
    for kwargs, reason in cases:
        model = _residual_graph(graphs, **kwargs)
        reasons = explain(model, ["skip_norm"])["skip_norm"]
        assert len(reasons) == 1 and reason in reasons[0], reasons
        assert reasons[0].startswith("norm (RMSNormalization)") or reasons[0].startswith(
            "residual (Add)"
        ), reasons
        # the second pair still fuses
        assert fuse_decoder(model, ["skip_norm"]) == {"skip_norm": 1}
        assert graphs.ops(model).count("RMSNormalization") == 1
