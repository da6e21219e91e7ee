from __future__ import annotations

import json

import onnx
import pytest
import torch

from diag.compat.transformers_api import cache_input
from diag.diagnose import localize_layer, model_stages
from diag.export.check.tolerance import default_atol

N_LAYERS = 4
STAGES = (
    ["model.embed_tokens"]
    + [f"model.layers.{i}" for i in range(N_LAYERS)]
    + ["model.norm", "logits"]
)


def test_scaled_difference_follows_each_token_magnitude():
    from diag.diagnose.layers.localize import scaled_difference

    ref = torch.ones(1, 3, 64)
    ref[0, 0, 5] = 25_000.0  # a massive activation on the first token (SmolLM2 has them)
    rounding = ref.clone()
    rounding[0, 0, 5] += 0.02  # float32 rounding of 25,000 after a few dozen operations
    max_abs, scaled = scaled_difference(ref, rounding)
    # (25,000.02 is 25,000.0195 in float32)
    assert max_abs == pytest.approx(0.02, rel=0.05) and scaled < 1e-4
    # the same absolute error on an ordinary token is an error
    wrong = ref.clone()
    wrong[0, 2, 7] += 0.02
    assert scaled_difference(ref, wrong)[1] == pytest.approx(0.02, rel=1e-3)
    bad = ref.clone()
    bad[0, 1, 0] = float("nan")
    assert scaled_difference(ref, bad) == (float("inf"), float("inf"))


def test_model_stages(tiny_model):
    stages = model_stages(tiny_model)
    assert [s.name for s in stages] == STAGES
    assert [s.layer for s in stages if s.kind == "layer"] == list(range(N_LAYERS))
    assert stages[1].module is tiny_model.model.layers[0]


def test_model_stages_gpt2():
    from diag.models.untrained import get_tiny_config, make_untrained_model

    model = make_untrained_model(get_tiny_config("gpt2"))
    names = [s.name for s in model_stages(model)]
    assert names[0] == "transformer.wte"
    assert names[1:3] == ["transformer.h.0", "transformer.h.1"]
    assert names[-2:] == ["transformer.ln_f", "logits"]


def test_good_export_has_no_culprit(tiny_model, tiny_onnx, prompt):
    report = localize_layer(tiny_model, tiny_onnx, {"input_ids": prompt})
    assert report.agrees and report.culprit is None and report.culprit_layer is None
    assert report.method == "module scopes"
    assert report.table["stage"].tolist() == STAGES
    assert report.table["ok"].all()
    assert report.table["max_abs_diff"].max() < default_atol(torch.float32)
    # every stage was matched to a distinct ONNX value
    assert report.table["onnx_name"].notna().all()
    assert report.table["onnx_name"].nunique() == len(STAGES)
    assert report.table["shape"].iloc[1] == (1, prompt.shape[1], tiny_model.config.hidden_size)
    # the tolerance is said to bound the scaled difference, the largest one quoted
    scaled = report.table["scaled_diff"].max()
    assert f"all 7 stages agree: scaled difference {scaled:.3g} <= tol=" in str(report)
    json.dumps(report.to_dict(), default=str)


def test_broken_layer_is_named(tiny_model, broken_layer, prompt):
    report = localize_layer(tiny_model, broken_layer.path, prompt)
    assert report.culprit == "model.layers.1" and report.culprit_layer == 1
    ok = dict(zip(report.table["stage"], report.table["ok"], strict=True))
    assert ok["model.embed_tokens"] and ok["model.layers.0"]
    assert not any(ok[s] for s in STAGES[2:])  # the error spreads to every later stage
    assert "first stage beyond tol=0.001: model.layers.1" in str(report)


def test_broken_embedding_is_named(tiny_model, broken_embedding, prompt):
    ids = torch.cat([prompt, torch.tensor([[broken_embedding.token]])], dim=1)
    report = localize_layer(tiny_model, broken_embedding.path, {"input_ids": ids})
    assert report.culprit == "model.embed_tokens" and report.culprit_layer is None
    # the prompt alone does not read the changed row: no culprit
    assert localize_layer(tiny_model, broken_embedding.path, prompt).culprit is None


def test_residual_stream_fallback_without_metadata(tiny_model, broken_layer, tiny_onnx, prompt):
    # the broken file also loses the value types (tools that drop value_info too):
    # shape inference gives back the types of the extra outputs
    cases = [(tiny_onnx, None, False), (broken_layer.path, "model.layers.1", True)]
    for path, culprit, drop_types in cases:
        proto = onnx.load(path)
        for node in proto.graph.node:
            del node.metadata_props[:]
        if drop_types:
            del proto.graph.value_info[:]
        outputs = [o.name for o in proto.graph.output]
        report = localize_layer(tiny_model, proto, {"input_ids": prompt})
        # the caller's model is left as it was
        assert [o.name for o in proto.graph.output] == outputs
        assert report.method == "residual stream"
        assert report.culprit == culprit, str(report)
        assert report.table["onnx_name"].notna().all()


def test_with_a_cache_and_padding(tiny_model, tiny_onnx):
    from diag.models.inputs import make_dummy_inputs

    inputs, _ = make_dummy_inputs(tiny_model, batch=2, seq=3, past=5)
    length = cache_input(inputs).get_seq_length()
    report = localize_layer(tiny_model, tiny_onnx, inputs)
    assert report.culprit is None, str(report)
    # the caller's cache is left as it was
    assert cache_input(inputs).get_seq_length() == length
    ids = torch.tensor([[2, 2, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    report = localize_layer(tiny_model, tiny_onnx, {"input_ids": ids, "attention_mask": mask})
    assert report.table["ok"].iloc[:-1].all(), str(report)


def test_tolerance_decides(tiny_model, tiny_onnx, prompt):
    # float32 rounding (~1e-7) passes 1e-4 but not an absurdly strict tolerance
    strict = localize_layer(tiny_model, tiny_onnx, prompt, tol=1e-12)
    assert strict.culprit is not None


def test_bad_arguments(tiny_model, tiny_onnx, prompt, tmp_path):
    import onnxruntime as ort

    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    with pytest.raises(TypeError, match="pass the file"):
        localize_layer(tiny_model, sess, prompt)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        localize_layer(tiny_model, str(tmp_path / "missing.onnx"), prompt)
    with pytest.raises(TypeError, match="input_ids"):
        localize_layer(tiny_model, tiny_onnx, [1, 2, 3])
    with pytest.raises(ValueError, match=r"token id 49152 \(row 0, position 1\), outside"):
        localize_layer(tiny_model, tiny_onnx, torch.tensor([[1, 49152]]))
    with pytest.raises(ValueError, match="2D int64 tensor"):
        localize_layer(tiny_model, tiny_onnx, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="tol"):
        localize_layer(tiny_model, tiny_onnx, prompt, tol=0)
