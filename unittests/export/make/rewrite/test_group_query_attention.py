"""export_causal_lm(attention="gqa"): every layer's attention becomes one
com.microsoft GroupQueryAttention (rotary inside, the packed q/k/v product as input),
no opset-23 Attention or RotaryEmbedding is left, the metadata says right padding, the
key differs from the default export's, and models the rewrite cannot convert are
refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from diag import contract
from diag.contract.detect import detect_layout
from diag.export import export_causal_lm
from diag.export.make.attention_kind import GroupQueryAttentionError
from diag.models import get_untrained_model_with_inputs


def _graph(exported) -> onnx.ModelProto:
    return onnx.load(exported.filename, load_external_data=False)


def test_every_layer_is_one_group_query_attention(gqa_exports):
    model, exported = gqa_exports("llama")
    config = model.config
    proto = _graph(exported)
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert ops.count(("com.microsoft", "GroupQueryAttention")) == config.num_hidden_layers
    assert not {"Attention", "RotaryEmbedding"} & {op for domain, op in ops if domain in ("", "ai.onnx")}
    assert exported.fusions["group_query_attention"] == config.num_hidden_layers
    assert exported.validation is not None and exported.validation.ok
    head_dim = config.hidden_size // config.num_attention_heads
    inits = {i.name: i for i in proto.graph.initializer}
    for node in (n for n in proto.graph.node if n.op_type == "GroupQueryAttention"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["num_heads"] == config.num_attention_heads
        assert attrs["kv_num_heads"] == config.num_key_value_heads
        assert attrs["do_rotary"] == 1 and attrs["local_window_size"] == -1
        # the packed product (q, k and v in one input), the cache, the lengths, the tables
        assert node.input[1] == node.input[2] == ""
        assert node.input[3].startswith("past_key_values.") and node.input[3].endswith(".key")
        cos = numpy_helper.to_array(inits[node.input[7]])
        assert cos.shape == (config.max_position_embeddings, head_dim // 2)
        np.testing.assert_allclose(cos[0], 1.0)
    entry = {p.key: p.value for p in proto.metadata_props}[contract.ATTENTION_METADATA]
    assert json.loads(entry) == {"op": "GroupQueryAttention", "padding": "right"}
    assert detect_layout(exported.filename) == contract.GQA_LAYOUT
    assert contract.GQA_LAYOUT.padding == "right"


# pinned: a second architecture (every release fuses llama's attention above), its own
# GQA export of ~12 s
@pytest.mark.pinned
def test_sliding_window_goes_to_local_window_size(gqa_exports):
    model, exported = gqa_exports("mistral-sw8")
    windows = [
        onnx.helper.get_attribute_value(a)
        for n in _graph(exported).graph.node
        if n.op_type == "GroupQueryAttention"
        for a in n.attribute
        if a.name == "local_window_size"
    ]
    assert windows == [model.config.sliding_window] * model.config.num_hidden_layers


def test_the_export_is_reused_under_its_own_key(gqa_exports):
    model, exported = gqa_exports("llama")
    again = export_causal_lm(model, exported.filename, attention="gqa", verify=False)
    assert again.cached and again.key == exported.key
    assert again.fusions["group_query_attention"] == model.config.num_hidden_layers
    assert again.input_names == contract.GQA_LAYOUT.input_names(model.config.num_hidden_layers)


def test_gqa_without_the_fusions_is_refused():
    model = get_untrained_model_with_inputs("llama")["model"].eval()
    with pytest.raises(ValueError, match="needs fuse=True"):
        export_causal_lm(model, attention="gqa", fuse=False)


@pytest.mark.slow
def test_a_model_without_rotary_is_refused_with_the_reason(tmp_path):
    model = get_untrained_model_with_inputs("gpt2")["model"].eval()
    with pytest.raises(GroupQueryAttentionError, match="expected RotaryEmbedding"):
        export_causal_lm(model, tmp_path / "model.onnx", attention="gqa", verify=False)
