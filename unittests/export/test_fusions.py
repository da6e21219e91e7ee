"""diag.export.fusions: each fusion fires where it should, nowhere else, and the fused
graph computes what the unfused one computes."""

from __future__ import annotations

import collections

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from diag.compat.transformers_api import cache_input
from diag.export import torch_export_patches
from diag.export.fusions import FUSIONS, fuse_decoder
from diag.export.onnx_export import export_to_ir
from diag.export.validate import make_step_inputs
from diag.models import get_untrained_model_with_inputs
from diag.models.cache_layout import cache_layout
from diag.models.inputs import make_dummy_inputs

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _export(name: str, opset: int) -> tuple[torch.nn.Module, ir.Model]:
    model = get_untrained_model_with_inputs(name)["model"].eval()
    inputs, dynamic_shapes = make_dummy_inputs(model, with_position_ids=True)
    with torch_export_patches():
        model_ir = export_to_ir(
            model, (), kwargs=inputs, dynamic_shapes=dynamic_shapes, opset=opset
        )
    return model, model_ir


def _session(model_ir: ir.Model) -> ort.InferenceSession:
    proto = ir.serde.serialize_model(model_ir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, model: torch.nn.Module) -> list[dict[str, np.ndarray]]:
    """A step with a past and left padding, a decode step, a prefill: numpy feeds."""
    feeds = []
    for batch, seq, past, pad in ((2, 4, 6, 3), (2, 1, 9, 0), (1, 5, 0, 0)):
        inputs = make_step_inputs(model, batch, seq, past, left_padding=pad)
        flat = [inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]]
        for layer in cache_input(inputs).layers:
            flat.extend([layer.keys, layer.values])
        names = [i.name for i in session.get_inputs()]
        feeds.append({n: t.numpy() for n, t in zip(names, flat, strict=True)})
    return feeds


@pytest.fixture(scope="module")
def llama23():
    return _export("llama", 23)


def test_every_fusion_fires_on_llama_and_the_outputs_stay(llama23):
    model, model_ir = llama23
    layers = cache_layout(model).num_layers
    before = _session(model_ir)
    fused_ir = ir.from_proto(ir.serde.serialize_model(model_ir))
    nodes_before = len(list(fused_ir.graph))

    counts = fuse_decoder(fused_ir)

    # two norms per layer and the final one; q and k rotated; one attention per layer;
    # q/k/v and gate/up packed
    assert counts == {
        "rms_norm": 2 * layers + 1,
        "rotary": 2 * layers,
        "attention_past": layers,
        "attention_3d": layers,
        "packed_matmul": 2 * layers,
    }
    ops = collections.Counter(n.op_type for n in fused_ir.graph)
    assert ops["RMSNormalization"] == 2 * layers + 1
    assert ops["RotaryEmbedding"] == 2 * layers
    # transformers 4.57 computes the rotary angles (cos / sin, once for all layers) with
    # a MatMul and a Transpose in rotary_emb: counted apart
    layer_ops = collections.Counter(
        n.op_type
        for n in fused_ir.graph
        if "rotary_emb" not in n.metadata_props.get("pkg.torch.onnx.name_scopes", "")
    )
    # q/k/v, o, gate/up, down per layer, and the lm_head (not tied in the tiny llama)
    assert ops["Attention"] == layers and layer_ops["MatMul"] == 4 * layers + 1
    assert layer_ops["Pow"] == layer_ops["Reciprocal"] == 0
    assert layer_ops["Neg"] == layer_ops["Transpose"] == 0
    # ~53 nodes per layer before, ~14 after
    assert nodes_before - len(list(fused_ir.graph)) >= 35 * layers
    # the fused nodes keep the exporter's module scopes (diag.localize_layer reads them)
    for node in fused_ir.graph:
        if node.op_type in ("RMSNormalization", "RotaryEmbedding", "Attention", "Split"):
            scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
            assert "model" in scopes, (node.op_type, node.name)
    attention = next(n for n in fused_ir.graph if n.op_type == "Attention")
    assert "self_attn" in attention.metadata_props["pkg.torch.onnx.name_scopes"]
    # the cache outputs are now the attention's own outputs, under the same names
    after = _session(fused_ir)
    assert [o.name for o in after.get_outputs()] == [o.name for o in before.get_outputs()]
    for feeds in _feeds(before, model):
        expected = before.run(None, feeds)
        got = after.run(None, feeds)
        for e, g in zip(expected, got, strict=True):
            assert e.shape == g.shape
            np.testing.assert_allclose(g, e, atol=2e-5)


def test_fusions_can_be_chosen_and_unknown_ones_are_refused(llama23):
    _, model_ir = llama23
    copy_ir = ir.from_proto(ir.serde.serialize_model(model_ir))
    counts = fuse_decoder(copy_ir, ["rms_norm"])
    assert set(counts) == {"rms_norm"} and counts["rms_norm"] > 0
    assert not any(n.op_type == "RotaryEmbedding" for n in copy_ir.graph)
    with pytest.raises(ValueError, match="unknown fusions \\['flash'\\]; known"):
        fuse_decoder(copy_ir, ["flash"])
    assert list(FUSIONS) == [
        "rms_norm",
        "rotary",
        "attention_past",
        "attention_3d",
        "packed_matmul",
    ]


def test_opset_18_keeps_its_patterns_but_packs_matmuls():
    _, model_ir = _export("llama", 18)
    counts = fuse_decoder(model_ir)
    assert counts["rms_norm"] == counts["rotary"] == counts["attention_past"] == 0
    assert counts["attention_3d"] == 0
    assert counts["packed_matmul"] > 0
    assert not any(n.op_type in ("RMSNormalization", "RotaryEmbedding") for n in model_ir.graph)


# ------------------------------------------------------------------ look-alikes left alone
def _value(name: str, shape: list) -> ir.Value:
    return ir.Value(name=name, shape=ir.Shape(shape), type=FLOAT)


def _const(name: str, array: np.ndarray) -> ir.Value:
    return ir.Value(name=name, const_value=ir.tensor(array))


def _rms_graph(exponent: float, axis: int) -> ir.Model:
    x = _value("x", [2, 3, 8])
    two = _const("two", np.array(exponent, dtype=np.float32))
    axes = _const("axes", np.array([axis], dtype=np.int64))
    eps = _const("eps", np.array(1e-6, dtype=np.float32))
    w = _const("w", np.linspace(0.5, 1.5, 8).astype(np.float32))
    nodes = [ir.node("Pow", [x, two])]
    nodes.append(ir.node("ReduceMean", [nodes[-1].outputs[0], axes], attributes={"keepdims": 1}))
    nodes.append(ir.node("Add", [nodes[-1].outputs[0], eps]))
    nodes.append(ir.node("Sqrt", [nodes[-1].outputs[0]]))
    nodes.append(ir.node("Reciprocal", [nodes[-1].outputs[0]]))
    nodes.append(ir.node("Mul", [x, nodes[-1].outputs[0]]))
    nodes.append(ir.node("Mul", [w, nodes[-1].outputs[0]]))
    out = nodes[-1].outputs[0]
    out.name, out.shape, out.type = "y", ir.Shape([2, 3, 8]), FLOAT
    graph = ir.Graph(
        [x], [out], nodes=nodes, initializers=[two, axes, eps, w], opset_imports={"": 23}
    )
    return ir.Model(graph, ir_version=10)


def _run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return _session(model).run(None, feeds)


def test_rms_norm_fuses_exactly_the_rms_pattern():
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    model = _rms_graph(2.0, -1)
    expected = _run(model, {"x": x})[0]
    assert fuse_decoder(model)["rms_norm"] == 1
    assert [n.op_type for n in model.graph] == ["RMSNormalization"]
    np.testing.assert_allclose(_run(model, {"x": x})[0], expected, atol=1e-6)
    # a cube instead of a square, or a mean over another axis: not an RMSNorm
    for exponent, axis in ((3.0, -1), (2.0, 1)):
        other = _rms_graph(exponent, axis)
        assert fuse_decoder(other)["rms_norm"] == 0
        assert "RMSNormalization" not in [n.op_type for n in other.graph]


def _rotary_graph(second_half_start: int, same_freqs: bool) -> ir.Model:
    x = _value("x", [1, 2, 5, 8])
    f = _value("f", [1, 5, 4])
    g = _value("g", [1, 5, 4])
    c = {
        name: _const(name, np.array(v, dtype=np.int64))
        for name, v in {
            "zero": [0],
            "half": [4],
            "start2": [second_half_start],
            "end": [2**62],
            "axis": [-1],
            "one": [1],
        }.items()
    }
    nodes = [ir.node("Concat", [f, f], attributes={"axis": -1})]
    cat = nodes[-1].outputs[0]
    nodes.append(ir.node("Concat", [f, g if not same_freqs else f], attributes={"axis": -1}))
    cat_sin = nodes[-1].outputs[0] if not same_freqs else cat
    nodes.append(ir.node("Cos", [cat]))
    nodes.append(ir.node("Unsqueeze", [nodes[-1].outputs[0], c["one"]]))
    cos = nodes[-1].outputs[0]
    nodes.append(ir.node("Sin", [cat_sin]))
    nodes.append(ir.node("Unsqueeze", [nodes[-1].outputs[0], c["one"]]))
    sin = nodes[-1].outputs[0]
    nodes.append(ir.node("Slice", [x, c["zero"], c["half"], c["axis"]]))
    first = nodes[-1].outputs[0]
    nodes.append(ir.node("Slice", [x, c["start2"], c["end"], c["axis"]]))
    nodes.append(ir.node("Neg", [nodes[-1].outputs[0]]))
    nodes.append(ir.node("Concat", [nodes[-1].outputs[0], first], attributes={"axis": -1}))
    nodes.append(ir.node("Mul", [nodes[-1].outputs[0], sin]))
    rotated = nodes[-1].outputs[0]
    nodes.append(ir.node("Mul", [x, cos]))
    nodes.append(ir.node("Add", [nodes[-1].outputs[0], rotated]))
    out = nodes[-1].outputs[0]
    out.name, out.shape, out.type = "y", ir.Shape([1, 2, 5, 8]), FLOAT
    for n in nodes:
        for o in n.outputs:
            if o.type is None:
                o.type = FLOAT
    f.shape = g.shape = ir.Shape([1, 5, 4])
    graph = ir.Graph(
        [x, f, g], [out], nodes=nodes, initializers=list(c.values()), opset_imports={"": 23}
    )
    return ir.Model(graph, ir_version=10)


def test_rotary_fuses_rotate_half_with_cos_sin_of_duplicated_frequencies():
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((1, 2, 5, 8)).astype(np.float32),
        "f": rng.standard_normal((1, 5, 4)).astype(np.float32),
        "g": rng.standard_normal((1, 5, 4)).astype(np.float32),
    }
    model = _rotary_graph(4, same_freqs=True)
    expected = _run(model, feeds)[0]
    assert fuse_decoder(model, ["rotary"])["rotary"] == 1
    assert "RotaryEmbedding" in [n.op_type for n in model.graph]
    np.testing.assert_allclose(_run(model, feeds)[0], expected, atol=1e-5)
    # the second half starts elsewhere, or sin is not computed from the same table
    for start, same in ((3, True), (4, False)):
        other = _rotary_graph(start, same_freqs=same)
        assert fuse_decoder(other, ["rotary"])["rotary"] == 0


def test_packed_matmul_leaves_shared_weights_alone():
    x = _value("x", [1, 4])
    w1 = _const("w1", np.ones((4, 2), dtype=np.float32))
    w2 = _const("w2", np.full((4, 3), 2.0, dtype=np.float32))
    a, b = ir.node("MatMul", [x, w1]), ir.node("MatMul", [x, w2])
    c = ir.node("MatMul", [b.outputs[0], _const("w3", np.ones((3, 2), dtype=np.float32))])
    # w1 is also read by a Gather (like a tied embedding): packing would copy it
    ids = _value("ids", [1])
    ids.type = ir.TensorType(ir.DataType.INT64)
    gather = ir.node("Gather", [w1, ids])
    outs = [a.outputs[0], c.outputs[0], gather.outputs[0]]
    for o, name in zip(outs, "abc", strict=True):
        o.name, o.type = name, FLOAT
    graph = ir.Graph(
        [x, ids],
        outs,
        nodes=[a, b, c, gather],
        initializers=[w1, w2, c.inputs[1]],
        opset_imports={"": 23},
    )
    assert fuse_decoder(ir.Model(graph, ir_version=10), ["packed_matmul"])["packed_matmul"] == 0
