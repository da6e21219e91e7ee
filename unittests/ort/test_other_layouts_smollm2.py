"""SmolLM2 through onnxruntime-genai's builder (fp32, int4), transformers' exporter and
optimum-onnx, driven by onnx_generate and the diagnose tools (slow: the real model).

optimum-onnx needs transformers < 4.58: its cases carry the ``extras`` marker too, which
CI's release phases select (the 4.57.6 phase installs it), and skip elsewhere."""

from __future__ import annotations

import pytest
import torch

from diag.diagnose import compare_teacher_forced, first_divergence
from diag.generation import onnx_generate, open_steps

pytestmark = pytest.mark.slow

PROMPTS = ["def print_prime(n):", "The capital of France is", "Once upon a time, in a"]


FP32 = ["genai-fp32", "transformers", pytest.param("optimum", marks=pytest.mark.extras)]


@pytest.fixture(scope="module", params=FP32)
def fp32_backend(request):
    if request.param == "genai-fp32":
        folder = request.getfixturevalue("genai_smollm2")("fp32")
    else:
        folder = request.getfixturevalue(f"{request.param}_smollm2")
    return open_steps(str(folder)).backend


@pytest.fixture(scope="module")
def reference(smollm2):
    """``case -> model.generate's tokens``, computed once for all the layouts (a seeded
    case is seeded here, the ONNX side seeds itself the same)."""
    model, _ = smollm2
    done: dict[str, torch.Tensor] = {}

    def get(case: str, inputs: dict, **knobs) -> torch.Tensor:
        if case not in done:
            if knobs.get("do_sample"):
                torch.manual_seed(SEED)
            done[case] = model.generate(**inputs, **knobs)
        return done[case]

    return get


SEED = 5
GREEDY = dict(do_sample=False, eos_token_id=None)


# fp32_backend first: where its tool is missing, the test skips before SmolLM2 loads
def test_greedy_50_tokens(fp32_backend, smollm2, reference):
    _, tok = smollm2
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    expected = reference("greedy", {"input_ids": ids}, max_new_tokens=50, **GREEDY)
    got = onnx_generate(fp32_backend, ids, max_new_tokens=50, **GREEDY)
    assert got.shape == expected.shape == (1, ids.shape[1] + 50)
    assert torch.equal(got, expected), fp32_backend.layout.name


def test_left_padded_batch_and_sampling(fp32_backend, smollm2, reference):
    _, tok = smollm2
    tok.padding_side = "left"
    batch = dict(tok(PROMPTS, return_tensors="pt", padding=True))
    assert (batch["attention_mask"] == 0).any()
    knobs = dict(max_new_tokens=20, eos_token_id=None, pad_token_id=tok.pad_token_id)
    expected = reference("batch", batch, do_sample=False, **knobs)
    got = onnx_generate(fp32_backend, batch["input_ids"], batch["attention_mask"], do_sample=False, **knobs)
    assert torch.equal(got, expected), fp32_backend.layout.name
    sampling = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, **knobs)
    expected = reference("sampling", batch, **sampling)
    torch.manual_seed(SEED)
    got = onnx_generate(fp32_backend, batch["input_ids"], batch["attention_mask"], **sampling)
    assert torch.equal(got, expected), fp32_backend.layout.name


def test_int4_runs_and_the_tools_say_where_it_departs(smollm2, genai_smollm2):
    model, tok = smollm2
    folder = str(genai_smollm2("int4"))
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    tokens = onnx_generate(folder, ids, max_new_tokens=20, eos_token_id=None)
    assert tokens.shape == (1, ids.shape[1] + 20)
    div = first_divergence(model, folder, ids, max_new_tokens=20, tokenizer=tok)
    assert div and 0 <= div.step < 20
    assert "first divergence at step" in str(div)
    # teacher-forced on torch's tokens: the same steps agree, the argmax flips there
    df = compare_teacher_forced(model, folder, ids, max_new_tokens=div.step + 1)
    assert df["argmax_agree"].iloc[: div.step].all()
    assert not df["argmax_agree"].iloc[div.step]


# fp32_backend first: where its tool is missing, the test skips before SmolLM2 loads
def test_beam_search_against_torch(fp32_backend, smollm2):
    """Each tool's layout reorders its cache between beam search steps: torch's decisions
    at every step (diag.diagnose.beams), or a part at a near tie."""
    model, tok = smollm2
    ids = tok(PROMPTS[1], return_tensors="pt").input_ids
    div = first_divergence(model, fp32_backend, ids, max_new_tokens=12, num_beams=4,
                           eos_token_id=None)  # fmt: skip
    assert div.num_beams == 4 and div.largest_diff is not None
    assert not div or div.near_tie is True, f"{fp32_backend.layout.name}: {div}"
