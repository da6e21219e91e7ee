"""assert_same_tokens on diag's exports of the tiny zoo, and its message on a broken one."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from diag.diagnose.divergence import first_divergent_step
from diag.generation import onnx_generate
from diag.testing import assert_logits_close, assert_same_tokens
from unittests.conftest import TINY_ARCHITECTURES
from unittests.testing.conftest import BROKEN_LAYER

#: two prompts of different lengths: one left-padded batch
PROMPTS = [[5, 17, 256, 1024, 77], [9, 8, 300]]
MAX_NEW_TOKENS = 4


# llama on every release; pinned: the rest of the zoo (assert_same_tokens is diag's
# comparison over onnx_generate and model.generate, whose parity on every architecture
# unittests/ort/test_onnx_generate.py checks on every release)
@pytest.mark.parametrize(
    "arch",
    [a if a == "llama" else pytest.param(a, marks=pytest.mark.pinned) for a in TINY_ARCHITECTURES],
)
def test_every_zoo_export_passes(zoo, arch):
    model, path = zoo(arch)
    rows = assert_same_tokens(model, path, PROMPTS, max_new_tokens=MAX_NEW_TOKENS)
    # the tokens are model.generate's (greedy), one prompt at a time, no padding
    for prompt, row in zip(PROMPTS, rows, strict=True):
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=MAX_NEW_TOKENS)  # fmt: skip
        assert row == out[0, ids.shape[1] :].tolist()
    largest = assert_logits_close(model, path, PROMPTS, max_new_tokens=2)
    assert 0 < largest < 1e-3


def test_seeded_sampling_and_a_session(zoo):
    model, path = zoo("llama")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    a = assert_same_tokens(model, session, PROMPTS, max_new_tokens=5, do_sample=True, seed=3)
    b = assert_same_tokens(model, path, PROMPTS, max_new_tokens=5, do_sample=True, seed=4)
    greedy = assert_same_tokens(model, path, PROMPTS, max_new_tokens=5)
    assert a != greedy and a != b  # the seed and sampling reach both sides
    with pytest.raises(ValueError, match="seed"):
        assert_same_tokens(model, path, PROMPTS, max_new_tokens=2, do_sample=True)


def test_broken_layer_names_the_step_and_the_layer(zoo, broken_llama):
    model, _ = zoo("llama")
    with pytest.raises(AssertionError) as info:
        assert_same_tokens(model, broken_llama, PROMPTS, max_new_tokens=MAX_NEW_TOKENS)
    message = " ".join(str(info.value).split())  # the message is wrapped at spaces
    # the step the message names is the first one where the tokens differ, found here
    # with onnx_generate and model.generate alone
    ids = torch.tensor([PROMPTS[0]])
    onnx_row = onnx_generate(broken_llama, ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    torch_row = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=MAX_NEW_TOKENS)  # fmt: skip
    step = first_divergent_step(torch_row[0, 5:].tolist(), onnx_row[0, 5:].tolist())
    assert step is not None
    prompt_block = message.split("--- prompt 0")[1].split("--- prompt 1")[0]
    assert f"first divergence at step {step}," in prompt_block
    assert "reference top:" in prompt_block and "candidate top:" in prompt_block
    assert "margin over its 2nd" in prompt_block
    assert "verdict: not" in prompt_block  # not rounding: a broken weight
    assert f"first stage beyond tol=0.001: model.layers.{BROKEN_LAYER} " in prompt_block
    assert "2 of 2 generations differ" in message


def test_two_torch_sides_are_not_compared_layer_by_layer(zoo):
    model, _ = zoo("llama")
    other, _ = zoo("qwen2")  # another model of the same vocabulary
    with pytest.raises(AssertionError, match="layer by layer: not compared"):
        assert_same_tokens(model, other, PROMPTS[:1], max_new_tokens=2)


def test_bad_sides_and_prompts(zoo, tmp_path):
    model, _ = zoo("llama")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        assert_same_tokens(model, str(tmp_path / "missing.onnx"), PROMPTS)
    with pytest.raises(ValueError, match="holds 0 .onnx files"):
        assert_same_tokens(model, str(tmp_path), PROMPTS)
    with pytest.raises(TypeError, match="candidate must be"):
        assert_same_tokens(model, 42, PROMPTS)
    with pytest.raises(ValueError, match="tokenizer"):
        assert_same_tokens(model, model, ["some text"])


def test_logits_close_fails_on_the_broken_layer(zoo, broken_llama):
    model, path = zoo("llama")
    with pytest.raises(AssertionError) as info:
        assert_logits_close(model, broken_llama, PROMPTS)
    message = " ".join(str(info.value).split())  # the message is wrapped at spaces
    assert "worst: output 'logits'" in message and "step 0 (prefill" in message
    # the worst logit named is the largest difference of the prefill
    a = onnx_generate(broken_llama, torch.tensor([PROMPTS[0]]), max_new_tokens=1,
                      do_sample=False, output_logits=True, return_result=True).logits[0]  # fmt: skip
    b = onnx_generate(path, torch.tensor([PROMPTS[0]]), max_new_tokens=1, do_sample=False,
                      output_logits=True, return_result=True).logits[0]  # fmt: skip
    row0 = float((a - b).abs().max())
    assert "largest |diff| over every compared logit" in message
    assert row0 > 0.1
    # a tolerance above the damage lets it pass
    assert assert_logits_close(model, broken_llama, PROMPTS, atol=100.0) > 0.1


# llama on every release; pinned: a mixture-of-experts and a sliding-window decoder (the
# beam search itself is checked against model.generate on every architecture by the
# generation tests)
@pytest.mark.parametrize(
    "arch",
    ["llama", *(pytest.param(a, marks=pytest.mark.pinned) for a in ("qwen3_moe", "mistral-sw8"))],
)
def test_beam_search_passes_and_a_broken_export_names_the_hypotheses(zoo, arch, tmp_path):
    model, path = zoo(arch)
    rows = assert_same_tokens(model, path, PROMPTS, max_new_tokens=MAX_NEW_TOKENS, num_beams=3,
                              num_return_sequences=2)  # fmt: skip
    ids = torch.tensor([PROMPTS[0]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=3,
                         num_return_sequences=2, max_new_tokens=MAX_NEW_TOKENS)  # fmt: skip
    assert rows[:2] == out[:, ids.shape[1] :].tolist()
    broken = perturb_weight_of(path, f"layers.{BROKEN_LAYER}.self_attn.o_proj", tmp_path)
    with pytest.raises(AssertionError) as info:
        assert_same_tokens(model, broken, PROMPTS, max_new_tokens=MAX_NEW_TOKENS, num_beams=3,
                           localize_layers=False)  # fmt: skip
    message = " ".join(str(info.value).split())  # the message is wrapped at spaces
    assert "beam search of 3 hypotheses" in message
    # one report per prompt (its rows share one search), each naming its candidates
    block = message.split("--- prompt 0")[1].split("--- prompt 1")[0]
    assert "first divergence at step 0 (prompt 0), beam search of 3 hypotheses" in block
    assert ": chosen by reference; score reference " in block
    assert ": chosen by candidate; score reference " in block
    assert "verdict: not" in block


def perturb_weight_of(path: str, module: str, folder) -> str:
    """A copy of the export ``path`` in ``folder`` with the weight of ``module`` perturbed."""
    import onnx

    from diag.testing.perturb import perturb_weight

    proto = onnx.load(path)
    perturb_weight(proto, module, scale=0.2)
    out = str(folder / "broken.onnx")
    onnx.save(proto, out)
    return out
