"""export_causal_lm on every tiny architecture of the zoo, and on SmolLM2 (slow)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from diag.export import contract, export_causal_lm
from diag.export.validate import make_step_inputs
from diag.models import get_untrained_model_with_inputs
from diag.models.inputs import decoder_dims

TINY_ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gpt2"]


@pytest.fixture(scope="module")
def exported_llama(tmp_path_factory):
    model = get_untrained_model_with_inputs("llama")["model"]
    path = tmp_path_factory.mktemp("llama") / "model.onnx"
    return model, export_causal_lm(model, path)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_llama_follows_the_contract(exported_llama):
    model, result = exported_llama
    n = model.config.num_hidden_layers
    proto = onnx.load(result.filename, load_external_data=False)
    assert [i.name for i in proto.graph.input] == contract.input_names(n, with_position_ids=True)
    assert [o.name for o in proto.graph.output] == contract.output_names(n)
    inputs = {i.name: _dims(i) for i in proto.graph.input}
    outputs = {o.name: _dims(o) for o in proto.graph.output}
    batch, seq, past = contract.DIM_BATCH, contract.DIM_SEQ, contract.DIM_PAST
    assert inputs["input_ids"] == [batch, seq]
    assert inputs["position_ids"] == [batch, seq]
    dims = decoder_dims(model.config)
    assert inputs["past_key_values.0.key"] == [batch, dims.num_kv_heads, past, dims.head_dim]
    total = outputs["present.0.key"][2]
    assert isinstance(total, str) and past in total and seq in total
    assert inputs["attention_mask"] == [batch, total]
    assert outputs["logits"] == [batch, seq, model.config.vocab_size]
    assert os.fspath(result) == result.filename and not result.cached


def test_llama_validation_figures(exported_llama):
    _, result = exported_llama
    table = result.validation.as_dict()
    assert set(table) == {"dummy", "prefill", "decode", "left_padding", "prefill_left_padding"}
    for name, row in table.items():
        for group in ("logits", "present.key", "present.value"):
            assert 0 <= row[group] < 1e-4, (name, group, row)
    assert result.validation.ok


def test_llama_onnx_matches_torch_on_a_two_step_generation(exported_llama):
    # the present of one step fed back as the past of the next, with left padding
    model, result = exported_llama
    sess = ort.InferenceSession(result.filename, providers=["CPUExecutionProvider"])
    dims = decoder_dims(model.config)
    inputs = make_step_inputs(model.config, batch=2, seq=5, past=0, left_padding=2)
    feeds = {
        "input_ids": inputs["input_ids"].numpy(),
        "attention_mask": inputs["attention_mask"].numpy(),
        "position_ids": inputs["position_ids"].numpy(),
    }
    for i in range(model.config.num_hidden_layers):
        feeds[contract.past_key_name(i)] = np.zeros(
            (2, dims.num_kv_heads, 0, dims.head_dim), dtype=np.float32
        )
        feeds[contract.past_value_name(i)] = np.zeros(
            (2, dims.num_kv_heads, 0, dims.head_dim), dtype=np.float32
        )
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, feeds), strict=True))
    with torch.no_grad():
        expected = model(**inputs)
    np.testing.assert_allclose(out["logits"], expected.logits.numpy(), atol=1e-4)
    # second step: one token per row
    next_ids = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    mask = np.concatenate([feeds["attention_mask"], np.ones((2, 1), dtype=np.int64)], axis=1)
    feeds2 = {
        "input_ids": next_ids,
        "attention_mask": mask,
        "position_ids": feeds["position_ids"][:, -1:] + 1,
    }
    for i in range(model.config.num_hidden_layers):
        feeds2[contract.past_key_name(i)] = out[contract.present_key_name(i)]
        feeds2[contract.past_value_name(i)] = out[contract.present_value_name(i)]
    out2 = dict(zip(names, sess.run(None, feeds2), strict=True))
    with torch.no_grad():
        expected2 = model(
            input_ids=torch.from_numpy(next_ids),
            attention_mask=torch.from_numpy(mask),
            position_ids=torch.from_numpy(feeds2["position_ids"]),
            past_key_values=expected.past_key_values,
        )
    np.testing.assert_allclose(out2["logits"], expected2.logits.numpy(), atol=1e-4)
    assert out2["present.0.key"].shape == (2, dims.num_kv_heads, 6, dims.head_dim)
