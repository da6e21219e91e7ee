"""diag.export.make.rewrite.packed_matmul: the products of one input by weights of their
own become one product and a Split; a shared weight is left alone, and said so."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from diag.export.make.rewrite import explain, fuse_decoder
from diag.helpers.rounding import matmul_tolerance


def _products(graphs, tied: bool) -> ir.Model:
    """``x`` times three weights (q, k, v), the first also read by a Gather when
    ``tied`` (a tied embedding)."""
    x = graphs.value("x", [2, 4])
    rng = np.random.default_rng(4)
    weights = [
        graphs.const(f"w{i}", rng.standard_normal((4, n)).astype(np.float32))
        for i, n in enumerate((2, 3, 3))
    ]
    nodes = [ir.node("MatMul", [x, w], name=f"proj{i}") for i, w in enumerate(weights)]
    outputs = [n.outputs[0] for n in nodes]
    inputs = [x]
    if tied:
        ids = graphs.value("ids", [1], ir.DataType.INT64)
        inputs.append(ids)
        nodes.append(ir.node("Gather", [weights[0], ids]))
        outputs.append(nodes[-1].outputs[0])
    return graphs.model(inputs, outputs, nodes)


def test_packed_matmul_packs_the_products_in_graph_order(graphs):
    model = _products(graphs, tied=False)
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)}
    expected = graphs.run(model, feeds)
    assert fuse_decoder(model, ["packed_matmul"]) == {"packed_matmul": 1}
    assert graphs.ops(model) == ["MatMul", "Split"]
    packed = next(iter(model.graph)).inputs[1]
    assert packed.const_value.shape == (4, 8) and packed.name in model.graph.initializers
    assert sorted(model.graph.initializers) == [packed.name, f"{packed.name}_split"]
    # one wider product takes other kernel blocking than three narrow ones
    atol = matmul_tolerance(feeds["x"], packed.const_value.numpy())
    for got, want in zip(graphs.run(model, feeds), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_packed_matmul_leaves_a_shared_weight_alone_and_says_why(graphs):
    model = _products(graphs, tied=True)
    reasons = explain(model, ["packed_matmul"])["packed_matmul"]
    assert reasons == [
        "proj0 (MatMul): not packed with 'proj1': its weight 'w0' is read by 2 nodes [PackedMatMul8]"
    ]
    # the two others still go together
    assert fuse_decoder(model, ["packed_matmul"]) == {"packed_matmul": 1}
    assert sorted(graphs.ops(model)) == ["Gather", "MatMul", "MatMul", "Split"]
    assert "w0" in model.graph.initializers
