"""The cache reorder of beam search on ONNX Runtime (diag.ort.cache_reorder), and
onnx_generate's beam search against model.generate on every layout it drives."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from diag.export import export_causal_lm
from diag.generation import onnx_generate, open_steps
from diag.helpers.rounding import accumulation_tolerance
from diag.models import get_untrained_model_with_inputs
from diag.ort.cache_reorder import cache_reorder, reorder_model
from unittests.conftest import left_padded_prompts

CPU = ["CPUExecutionProvider"]


# pinned: ONNX Runtime logic, the same on every transformers release
@pytest.mark.pinned
@pytest.mark.parametrize(
    "elem, dtype",
    [
        (TensorProto.FLOAT, np.float32),
        (TensorProto.FLOAT16, np.float16),
        (TensorProto.INT64, np.int64),
    ],
)
def test_reorder_gathers_the_rows_of_every_tensor(elem, dtype):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 2, 5, 3)).astype(dtype) for _ in range(3)]
    past = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    rows = torch.tensor([2, 2, 0, 3])
    out = cache_reorder([elem] * 3, "cpu", 0, CPU)(past, rows)
    assert len(out) == 3
    for got, array in zip(out, arrays, strict=True):
        np.testing.assert_array_equal(got.numpy(), array[rows.numpy()])
    # one graph per kind of cache, kept
    assert cache_reorder([elem] * 3, "cpu", 0, CPU) is cache_reorder([elem] * 3, "cpu", 0, CPU)
    assert [n.op_type for n in reorder_model([elem] * 3).graph.node] == ["Gather"] * 3


@pytest.mark.pinned  # ONNX Runtime logic, the same on every transformers release
def test_reorder_refuses_rows_outside_the_batch():
    past = [ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 1, 1, 1), dtype=np.float32))]
    reorder = cache_reorder([TensorProto.FLOAT], "cpu", 0, CPU)
    with pytest.raises(ValueError, match=r"rows in \[0, 2\)"):
        reorder(past, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="cache holds 2 tensors"):
        reorder(past * 2, torch.tensor([0, 1]))


def _score_bound(expected, got, length_penalty: float = 1.0) -> torch.Tensor:
    """How far ONNX Runtime's sequence scores may lie from torch's when both chose the
    same hypotheses: a score sums one log-probability per generated token, and a
    log-softmax moves by at most twice the largest change of the logits it reads
    (the token's logit, then the log-sum-exp); the sum itself rounds within
    :func:`accumulation_tolerance` of its length. Divided by the length penalty."""
    steps = torch.tensor(
        [2 * float((a - b).abs().max()) for a, b in zip(expected.logits, got.logits, strict=True)]
    )
    lengths = torch.tensor(got.num_generated_tokens)
    bounds = []
    for length, score in zip(lengths.tolist(), expected.sequences_scores.tolist(), strict=True):
        total = abs(score) * length**length_penalty
        rounding = accumulation_tolerance(max(length, 1), total, torch.float32)
        bounds.append((float(steps[:length].sum()) + rounding) / length**length_penalty)
    return torch.tensor(bounds)


def _assert_beams_match(model, backend, ids, mask, **options):
    expected = model.generate(
        ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True,
        output_logits=True, **options,
    )  # fmt: skip
    got = onnx_generate(
        backend, ids, mask, generation_config=model.generation_config, return_result=True,
        output_logits=True, **options,
    )  # fmt: skip
    assert torch.equal(got.sequences, expected.sequences)
    assert torch.equal(got.beam_indices, expected.beam_indices.long())
    bound = _score_bound(expected, got, options.get("length_penalty", 1.0))
    assert ((got.sequences_scores - expected.sequences_scores).abs() <= bound).all()
    return got


@pytest.fixture(scope="module")
def llama():
    """The tiny llama and the backend over its (cached) dynamic export."""
    model = get_untrained_model_with_inputs("llama")["model"].eval()
    return model, open_steps(export_causal_lm(model, verify=False)).backend


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=2),
        dict(num_beams=4, num_return_sequences=3, length_penalty=0.5),
        dict(num_beams=4, early_stopping=True),
    ],
    ids=["beams2", "beams4-return3", "early"],
)
def test_onnx_beam_search_equals_model_generate(llama, options):
    model, backend = llama
    ids, mask = left_padded_prompts(7, (0,), high=1000, seed=0)
    _assert_beams_match(model, backend, ids, mask, max_new_tokens=12, **options)


def test_onnx_beam_sampling_with_a_seed(llama):
    model, backend = llama
    ids, _ = left_padded_prompts(7, (0,), high=1000, seed=2)
    options = dict(max_new_tokens=10, num_beams=4, num_return_sequences=2, do_sample=True)
    torch.manual_seed(5)
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), **options)
    torch.manual_seed(5)
    got = onnx_generate(backend, ids, generation_config=model.generation_config, **options)
    assert torch.equal(got, expected)


def test_onnx_left_padded_batch_of_three(llama):
    model, backend = llama
    ids, mask = left_padded_prompts(7, (0, 3, 2), high=1000, seed=3)
    got = _assert_beams_match(
        model, backend, ids, mask, max_new_tokens=10, num_beams=4, num_return_sequences=2
    )
    assert got.sequences.shape == (6, 17)


# pinned: ONNX Runtime logic over an export (the static buffers and GroupQueryAttention
# layout reorder through the same graph), checked on the pinned set
@pytest.mark.pinned
@pytest.mark.parametrize("kind", ["static", "gqa"])
def test_onnx_beam_search_on_static_and_gqa_exports(static_exports, gqa_exports, kind):
    model, exported = (static_exports if kind == "static" else gqa_exports)("llama")
    backend = open_steps(exported).backend
    ids, mask = left_padded_prompts(7, (0, 2), high=1000, seed=4)
    _assert_beams_match(model, backend, ids, mask, max_new_tokens=10, num_beams=3)


# pinned: ONNX Runtime logic over an export, the same graph reorders every cache: one
# architecture per kind of cache (multi-query, latent attention, experts, a sliding
# window), their exports shared with the parity tests through diag's export cache
@pytest.mark.pinned
@pytest.mark.parametrize("arch", ["falcon", "deepseek_v3", "qwen3_moe", "mistral-sw8"])
def test_onnx_beam_search_on_other_caches(arch):
    model = get_untrained_model_with_inputs(arch)["model"].eval()
    backend = open_steps(export_causal_lm(model, verify=False)).backend
    ids, mask = left_padded_prompts(6, (0, 2), high=1000, seed=6)
    _assert_beams_match(model, backend, ids, mask, max_new_tokens=10, num_beams=4)


@pytest.mark.pinned  # ONNX Runtime logic over other tools' files
@pytest.mark.parametrize("tool", ["genai", "transformers"])
def test_onnx_beam_search_on_other_exporters(request, tool):
    model, folder = request.getfixturevalue(f"{tool}_tiny_llama")
    backend = open_steps(folder).backend
    ids = torch.randint(3, 1000, (1, 6), generator=torch.Generator().manual_seed(5))
    _assert_beams_match(model, backend, ids, torch.ones_like(ids), max_new_tokens=10, num_beams=4)


@pytest.mark.slow
def test_smollm2_beam_search(smollm2):
    model, tokenizer = smollm2
    backend = open_steps(export_causal_lm(model, verify=False)).backend
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    got = _assert_beams_match(
        model, backend, ids, torch.ones_like(ids), max_new_tokens=16, num_beams=4,
        num_return_sequences=2,
    )  # fmt: skip
    assert "Paris" in tokenizer.decode(got.sequences[0])
