"""diag.export.make.rewrite on an exported llama: each fusion fires where it should, the
fused graph computes what the unfused one computes, explain finds nothing to say.
The rules one by one, on graphs built for them: test_<rule>.py beside this file."""

from __future__ import annotations

import collections

import numpy as np
import onnx_ir as ir
import pytest
import torch

from diag.compat.transformers_api import cache_input
from diag.export import torch_export_patches
from diag.export.check.validation_inputs import make_step_inputs
from diag.export.make.logits_to_keep import add_logits_to_keep
from diag.export.make.onnx_export import export_to_ir
from diag.export.make.rewrite import FUSIONS, explain, fuse_decoder
from diag.models import get_untrained_model_with_inputs
from diag.models.cache_layout import cache_layout
from diag.models.inputs import make_dummy_inputs


def _export(name: str, opset: int) -> tuple[torch.nn.Module, ir.Model]:
    model = get_untrained_model_with_inputs(name)["model"].eval()
    inputs, dynamic_shapes = make_dummy_inputs(model, with_position_ids=True)
    assert add_logits_to_keep(model, inputs, dynamic_shapes)
    with torch_export_patches():
        model_ir = export_to_ir(
            model, (), kwargs=inputs, dynamic_shapes=dynamic_shapes, opset=opset
        )
    return model, model_ir


def _feeds(session, model: torch.nn.Module) -> list[dict[str, np.ndarray]]:
    """A step with a past and left padding, a decode step, a prefill: numpy feeds,
    each keeping the logits of other positions (some, the last one, every one)."""
    feeds = []
    steps = ((2, 4, 6, 3, [3, 0, 2]), (2, 1, 9, 0, [0]), (1, 5, 0, 0, list(range(5))))
    for batch, seq, past, pad, keep in steps:
        inputs = make_step_inputs(model, batch, seq, past, left_padding=pad)
        flat = [inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]]
        for layer in cache_input(inputs).layers:
            flat.extend([layer.keys, layer.values])
        flat.append(torch.tensor(keep))
        names = [i.name for i in session.get_inputs()]
        feeds.append({n: t.numpy() for n, t in zip(names, flat, strict=True)})
    return feeds


@pytest.fixture(scope="module")
def llama23():
    return _export("llama", 23)


def test_every_fusion_fires_on_llama_and_the_outputs_stay(llama23, graphs):
    model, model_ir = llama23
    layers = cache_layout(model).num_layers
    before = graphs.session(model_ir)
    fused_ir = ir.from_proto(ir.serde.serialize_model(model_ir))
    nodes_before = len(list(fused_ir.graph))
    ops_before = collections.Counter(n.op_type for n in fused_ir.graph)

    counts = fuse_decoder(fused_ir)

    # two norms per layer and the final one; q and k rotated; one attention per layer;
    # q/k/v and gate/up packed; every norm but the first layer's reads a residual sum
    assert counts == {
        "rms_norm": 2 * layers + 1,
        "rotary": 2 * layers,
        "attention_past": layers,
        "attention_3d": layers,
        "packed_matmul": 2 * layers,
        "gather_positions": 1,
        "skip_norm": 2 * layers,
    }
    ops = collections.Counter(n.op_type for n in fused_ir.graph)
    # the kept positions: one Gather of the final norm's output, read by the lm_head
    gather = next(
        n for n in fused_ir.graph if n.op_type == "Gather" and n.inputs[1].name == "logits_to_keep"
    )
    assert gather.attributes["axis"].value == 1
    assert [u.node.op_type for u in gather.outputs[0].uses()] == ["MatMul"]
    assert gather.inputs[0].producer().op_type == "SkipSimplifiedLayerNormalization"
    # (its Transpose -> GatherND -> Transpose gone: no Transpose left below)
    # the first layer's input norm reads the embedding, no sum: the only one left
    assert ops["RMSNormalization"] == 1
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * layers
    skip_norms = [n for n in fused_ir.graph if n.op_type == "SkipSimplifiedLayerNormalization"]
    # the sum (4th output) goes on down the residual stream, but not after the last norm
    assert [len(n.outputs[3].uses()) for n in skip_norms] == [1] * (2 * layers - 1) + [0]
    # the residual sums are the fused nodes' own: two Add less per layer
    assert ops_before["Add"] - ops["Add"] >= 2 * layers
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
        if node.op_type in (
            "RMSNormalization", "SkipSimplifiedLayerNormalization", "RotaryEmbedding",
            "Attention", "Split",
        ):  # fmt: skip
            scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
            assert "model" in scopes, (node.op_type, node.name)
    attention = next(n for n in fused_ir.graph if n.op_type == "Attention")
    assert "self_attn" in attention.metadata_props["pkg.torch.onnx.name_scopes"]
    # the cache outputs are now the attention's own outputs, under the same names
    after = graphs.session(fused_ir)
    assert [o.name for o in after.get_outputs()] == [o.name for o in before.get_outputs()]
    for feeds in _feeds(before, model):
        expected = before.run(None, feeds)
        got = after.run(None, feeds)
        for e, g in zip(expected, got, strict=True):
            assert e.shape == g.shape
            # a 2-layer tiny model: fused kernels (own exp, other summation order) stay
            # ~1e-6 from the plain graph on any CPU; a wrong fusion moves whole logits
            np.testing.assert_allclose(g, e, atol=2e-5)
        assert got[0].shape[1] == len(feeds["logits_to_keep"])


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
        "gather_positions",
        "skip_norm",
    ]


def test_explain_finds_no_near_miss_on_llama_and_leaves_the_model_alone(llama23):
    _, model_ir = llama23
    nodes = len(list(model_ir.graph))
    # every pattern of the tiny llama fuses: no rule has anything to report
    assert explain(model_ir) == {name: [] for name in FUSIONS}
    assert len(list(model_ir.graph)) == nodes
    assert not any(n.op_type == "RMSNormalization" for n in model_ir.graph)


# pinned: the rewriter's handling of an older opset, a second export of llama (every
# release checks each fusion at the default opset above)
@pytest.mark.pinned
def test_opset_18_keeps_its_patterns_but_packs_matmuls():
    _, model_ir = _export("llama", 18)
    counts = fuse_decoder(model_ir)
    assert counts["rms_norm"] == counts["rotary"] == counts["attention_past"] == 0
    assert counts["attention_3d"] == counts["skip_norm"] == 0
    assert counts["packed_matmul"] > 0
    assert not any(n.op_type in ("RMSNormalization", "RotaryEmbedding") for n in model_ir.graph)
