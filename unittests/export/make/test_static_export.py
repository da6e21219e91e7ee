"""export_causal_lm(cache="static", max_length=N): the static layout's names, shapes
and metadata, TensorScatter writing the buffers, the validation against the model's
own forward, the export key and the options refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from diag import contract
from diag.contract.detect import detect_layout
from diag.export import export_causal_lm
from diag.export.check.tolerance import default_atol
from diag.export.check.validate import validate_causal_lm
from diag.export.check.validation_inputs import make_step_inputs, run_torch, step_feeds
from diag.export.make.static_export import static_feeds
from diag.export.record.export_cache import read_sidecar
from diag.models import get_untrained_model_with_inputs
from diag.models.cache_layout import cache_layout
from unittests.conftest import STATIC_MAX_LENGTH


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_static_layout_names_shapes_and_metadata(static_exports):
    model, result = static_exports("llama")
    layout = cache_layout(model)
    proto = onnx.load(result.filename, load_external_data=False)
    assert [i.name for i in proto.graph.input] == contract.STATIC_LAYOUT.input_names(
        layout.num_layers
    )
    assert [o.name for o in proto.graph.output] == contract.STATIC_LAYOUT.output_names(
        layout.num_layers
    )
    assert result.input_names == [i.name for i in proto.graph.input]
    inputs = {i.name: _dims(i) for i in proto.graph.input}
    outputs = {o.name: _dims(o) for o in proto.graph.output}
    batch, seq, m = contract.DIM_BATCH, contract.DIM_SEQ, STATIC_MAX_LENGTH
    assert inputs["attention_mask"] == [batch, m]
    assert inputs["cache_position"] == [seq]
    for i, layer in enumerate(layout.layers):
        # past and present: the same buffer shape, so that one OrtValue is both
        assert inputs[contract.past_key_name(i)] == [batch, layer.kv_heads, m, layer.head_dim]
        assert outputs[contract.present_key_name(i)] == inputs[contract.past_key_name(i)]
    scatters = [n for n in proto.graph.node if n.op_type == "TensorScatter"]
    assert sorted(n.output[0] for n in scatters) == sorted(
        contract.PRESENT.names(layout.num_layers)
    )
    assert {o.domain: o.version for o in proto.opset_import}[""] == 24
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[contract.STATIC_CACHE_METADATA]) == {"max_length": m}
    assert contract.GENERATION_CONFIG_METADATA in meta
    found = detect_layout(result.filename)
    assert found.is_static and found.max_length == m and found.name == "diag-static"
    # the export key covers the layout: a dynamic export of the model has another one
    options = read_sidecar(result.filename)["key_parts"]["options"]
    assert (options["cache"], options["max_length"], options["opset"]) == ("static", m, 24)


# the static cache on llama on every release; pinned: the sliding-window variant (a
# second architecture, another static export of ~15 s)
@pytest.mark.parametrize("name", ["llama", pytest.param("gemma2-sw8", marks=pytest.mark.pinned)])
def test_static_export_validates_against_the_dynamic_forward(static_exports, name):
    model, result = static_exports(name)
    report = validate_causal_lm(model, result.filename)
    table = report.as_dict()
    # the dummy inputs are buffers (no torch cache to compare with): the input sets only
    assert set(table) == {"prefill", "decode", "left_padding", "prefill_left_padding"}
    for name, row in table.items():
        for group in ("logits", "present.key", "present.value"):
            # gemma2's padded prefill rows are float32 noise apart (the report's bound)
            assert 0 <= row[group] < 1e-3, (name, group, row)
    assert report.ok


# pinned: a second architecture of the static cache (test_static_export_validates_...
# checks llama's on every release), another static export of ~10 s
@pytest.mark.pinned
def test_one_step_writes_past_the_window_like_torch(static_exports):
    # a decode step 5 positions past a sliding window of 8, compared by hand
    model, result = static_exports("mistral-sw8")
    inputs, full_past = make_step_inputs(model, batch=2, seq=2, past=11, left_padding=3,
                                         with_full_past=True)  # fmt: skip
    session = ort.InferenceSession(result.filename, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs() if i.name != contract.CACHE_POSITION]
    feeds = static_feeds(step_feeds(inputs, names, full_past), STATIC_MAX_LENGTH)
    assert feeds["cache_position"].tolist() == [11, 12]
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    logits, keys, _ = run_torch(model, inputs)
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=default_atol(torch.float32))
    # torch's sliding layer keeps its window; the buffer holds all 13 positions
    key = got[contract.present_key_name(0)]
    np.testing.assert_allclose(key[:, :, 13 - keys[0].shape[2] : 13], keys[0].numpy(), atol=1e-5)
    assert (key[:, :, 13:] == 0).all()


def test_a_low_opset_is_refused_before_any_work():
    model = get_untrained_model_with_inputs("llama")["model"]
    with pytest.raises(ValueError, match="opset >= 24"):
        export_causal_lm(model, cache="static", max_length=64, opset=23, force=True)
