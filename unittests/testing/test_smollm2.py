"""diag.testing on the real model: SmolLM2-135M-Instruct and its export (slow)."""

from __future__ import annotations

import os

import pytest

from diag.testing import assert_logits_close, assert_matches_record, assert_same_tokens, record
from unittests.testing.conftest import perturb_layer

PROMPTS = ["def print_prime(n):", "The capital of France is"]


@pytest.fixture(scope="module")
def smol(smollm2):
    import diag

    model, tokenizer = smollm2
    # the export the diagnosis tests use (the export cache shares it)
    return model, tokenizer, diag.export_causal_lm(model, verify=False).filename


@pytest.mark.slow
def test_smollm2_export_passes_and_matches_its_record(smol, tmp_path):
    model, tokenizer, path = smol
    rows = assert_same_tokens(model, path, PROMPTS, tokenizer=tokenizer, max_new_tokens=12)
    assert all(len(r) == 12 for r in rows)
    # above 1e-4 on SmolLM2's logits (~30): the float32 noise raises the tolerance
    largest = assert_logits_close(model, path, PROMPTS, tokenizer=tokenizer)
    assert 1e-6 < largest < 1e-2
    golden = record(model, PROMPTS, tmp_path / "smollm2.json", tokenizer=tokenizer,
                    max_new_tokens=12)  # fmt: skip
    assert_matches_record(model, golden)
    assert_matches_record(path, golden)  # the export, within the noise-aware tolerance


@pytest.mark.slow
def test_smollm2_broken_layer(smol, tmp_path):
    model, tokenizer, path = smol
    # a trained model shrugs off small noise: 0.5 changes the first token
    broken = perturb_layer(path, 3, os.path.join(tmp_path, "model.onnx"), scale=0.5)
    with pytest.raises(AssertionError) as info:
        assert_same_tokens(model, broken, PROMPTS[:1], tokenizer=tokenizer, max_new_tokens=8)
    message = " ".join(str(info.value).split())  # the report is wrapped to 80 columns
    assert "first divergence at step" in message and "verdict: not" in message
    assert "first stage beyond tol=0.001: model.layers.3 " in message
