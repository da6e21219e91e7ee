"""diag.export.make.rewrite.rotary: onnxscript's RotaryEmbedding rule on diag's pattern."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from diag.export.make.rewrite import explain, fuse_decoder
from diag.helpers.rounding import accumulation_tolerance


def _rotary_graph(graphs, second_half_start: int, same_freqs: bool) -> ir.Model:
    """``x * cos + rotate_half(x) * sin`` as the exporter writes it (slices along
    axis 3 with steps), ``cos``/``sin`` from ``cat(f, f)`` (or ``cat(f, g)``)."""
    x, f, g = (
        graphs.value("x", [1, 2, 5, 8]),
        graphs.value("f", [1, 5, 4]),
        graphs.value("g", [1, 5, 4]),
    )
    c = {
        name: graphs.const(name, np.array(v, dtype=np.int64))
        for name, v in {
            "zero": [0], "half": [4], "start2": [second_half_start], "end": [2**62],
            "axis": [3], "one": [1],
        }.items()
    }  # fmt: skip
    nodes = [ir.node("Concat", [f, f], attributes={"axis": -1})]
    if not same_freqs:
        nodes.append(ir.node("Concat", [f, g], attributes={"axis": -1}))
    nodes.append(ir.node("Cos", [nodes[0].outputs[0]]))
    nodes.append(ir.node("Unsqueeze", [nodes[-1].outputs[0], c["one"]]))
    cos = nodes[-1].outputs[0]
    nodes.append(ir.node("Sin", [nodes[0 if same_freqs else 1].outputs[0]]))
    nodes.append(ir.node("Unsqueeze", [nodes[-1].outputs[0], c["one"]]))
    sin = nodes[-1].outputs[0]
    nodes.append(ir.node("Slice", [x, c["zero"], c["half"], c["axis"], c["one"]]))
    first = nodes[-1].outputs[0]
    nodes.append(ir.node("Slice", [x, c["start2"], c["end"], c["axis"], c["one"]]))
    nodes.append(ir.node("Neg", [nodes[-1].outputs[0]]))
    nodes.append(ir.node("Concat", [nodes[-1].outputs[0], first], attributes={"axis": -1}))
    nodes.append(ir.node("Mul", [nodes[-1].outputs[0], sin]))
    rotated = nodes[-1].outputs[0]
    nodes.append(ir.node("Mul", [x, cos]))
    nodes.append(ir.node("Add", [nodes[-1].outputs[0], rotated], name="rotary"))
    out = nodes[-1].outputs[0]
    out.shape = ir.Shape([1, 2, 5, 8])
    return graphs.model([x, f, g], [out], nodes)


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "x": rng.standard_normal((1, 2, 5, 8)).astype(np.float32),
        "f": rng.standard_normal((1, 5, 4)).astype(np.float32),
        "g": rng.standard_normal((1, 5, 4)).astype(np.float32),
    }


def test_rotary_fuses_rotate_half_with_cos_sin_of_duplicated_frequencies(graphs):
    model = _rotary_graph(graphs, 4, same_freqs=True)
    expected = graphs.run(model, _feeds())[0]
    assert fuse_decoder(model, ["rotary"]) == {"rotary": 1}
    assert sorted(graphs.ops(model)) == ["Cos", "RotaryEmbedding", "Sin"]
    rotary = next(n for n in model.graph if n.op_type == "RotaryEmbedding")
    # the tables of the half-size frequencies; no num_heads on a 4-D input
    assert [v.producer().inputs[0].name for v in rotary.inputs[1:]] == ["f", "f"]
    assert {k: a.value for k, a in rotary.attributes.items()} == {"interleaved": 0}
    # x * cos + rotate(x) * sin: a sum of two products, each at most |x| (|cos|, |sin| <= 1)
    atol = accumulation_tolerance(2, 2 * float(np.abs(_feeds()["x"]).max()))
    np.testing.assert_allclose(graphs.run(model, _feeds())[0], expected, rtol=0, atol=atol)


def test_rotary_refuses_other_halves_or_other_frequencies_and_says_why(graphs):
    for start, same, reason in (
        (3, True, "not being split into two equal halves"),
        (4, False, "Binding failure"),
    ):
        model = _rotary_graph(graphs, start, same_freqs=same)
        reasons = explain(model, ["rotary"])["rotary"]
        assert any(r.startswith("rotary (Add)") and reason in r for r in reasons), reasons
        assert fuse_decoder(model, ["rotary"]) == {"rotary": 0}
