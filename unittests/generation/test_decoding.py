"""diag.generation.decoding: the prompt check every entry point shares (check_inputs,
check_token_ids) refuses a bad prompt with diag's words, before any step, on the torch
and on the ONNX Runtime side alike."""

from __future__ import annotations

import pytest
import torch

from diag.generation.decoding import check_inputs, check_token_ids
from diag.generation.torch_backend import TorchBackend, model_vocab_size

IDS = torch.tensor([[1, 2, 3]])

# (input_ids, attention_mask, vocab_size, error type, what the message says)
BAD_PROMPTS = {
    "ids beyond the vocabulary": (
        torch.tensor([[1, 2, 16]]), None, 16, ValueError,
        r"token id 16 \(row 0, position 2\), outside the model's vocabulary \[0, 16\); "
        "encode the text with the model's own tokenizer",
    ),
    "negative ids": (
        torch.tensor([[1, -2, 3]]), None, 16, ValueError,
        r"token id -2 \(row 0, position 1\), outside the model's vocabulary",
    ),
    "negative ids, vocabulary unknown": (
        torch.tensor([[1, -2, 3]]), None, None, ValueError, r"token id -2 .*\[0, \.\.\.\)",
    ),
    "float ids": (torch.tensor([[1.0, 2.0]]), None, 16, TypeError, "integer token ids, got dtype torch.float32"),
    "bool ids": (torch.tensor([[True]]), None, 16, TypeError, "integer token ids, got dtype torch.bool"),
    "a list of ids": ([[1, 2, 3]], None, 16, TypeError, "must be a torch.Tensor of token ids.*tokenize"),
    "3-D ids": (IDS[None], None, 16, ValueError, r"2-D \[batch, sequence\], got shape \(1, 1, 3\)"),
    "no token": (torch.zeros((1, 0), dtype=torch.long), None, 16, ValueError, "give at least one token"),
    "mask of another shape": (
        IDS, torch.ones(1, 4, dtype=torch.long), 16, ValueError,
        r"attention_mask has shape \(1, 4\) but input_ids has shape \(1, 3\); they must match",
    ),
    "mask values other than 0/1": (
        IDS, torch.tensor([[2, 1, 1]]), 16, ValueError,
        r"values other than 0 and 1 \(\[2\]\); give 1 for each token and 0 for each left-padding",
    ),
    "a fractional float mask": (
        IDS, torch.tensor([[0.5, 1.0, 1.0]]), 16, ValueError, r"values other than 0 and 1 \(\[0.5\]\)",
    ),
    "mask all zero": (
        IDS, torch.zeros(1, 3, dtype=torch.long), 16, ValueError,
        r"rows \[0\] of attention_mask are all zeros",
    ),
    "a list as mask": (IDS, [[1, 1, 1]], 16, TypeError, "attention_mask must be a torch.Tensor, not list"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_a_bad_prompt_gets_a_message_naming_the_problem_and_the_fix(case):
    ids, mask, vocab, error, message = BAD_PROMPTS[case]
    with pytest.raises(error, match=message):
        check_inputs(ids, mask, vocab)


def test_a_good_prompt_passes_normalised():
    ids, mask = check_inputs(
        torch.tensor([0, 15], dtype=torch.int32), torch.tensor([True, True]), 16
    )
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[0, 15]] and mask.tolist() == [[1, 1]]
    # a float mask of 0/1 is what a tokenizer may give: accepted
    _, mask = check_inputs(IDS, torch.tensor([[0.0, 1.0, 1.0]]), 16)
    assert mask.tolist() == [[0, 1, 1]]


def test_forced_tokens_are_named_as_such():
    with pytest.raises(ValueError, match=r"^tokens holds the token id 20 \(index \(1,\)\)"):
        check_token_ids(torch.tensor([3, 20]), 16, what="tokens")


@pytest.fixture(scope="module")
def llama(tiny_model):
    return tiny_model("llama")


@pytest.mark.parametrize(
    "case", ["ids beyond the vocabulary", "negative ids", "mask values other than 0/1"]
)
def test_generate_refuses_before_any_step(llama, case, monkeypatch):
    import diag

    ids, mask, _, error, message = BAD_PROMPTS[case]
    vocab = model_vocab_size(llama)
    ids = torch.where(ids >= 16, vocab, ids)  # beyond this model's vocabulary
    message = message.replace("id 16", f"id {vocab}").replace(r"\[0, 16\)", rf"\[0, {vocab}\)")
    steps = []
    for step in ("prefill", "decode"):
        monkeypatch.setattr(TorchBackend, step, lambda self, *a, **k: steps.append(a))
    with pytest.raises(error, match=message):
        diag.generate(llama, ids, mask, max_new_tokens=2)
    assert steps == []


@pytest.mark.parametrize(
    "case", ["ids beyond the vocabulary", "negative ids", "mask values other than 0/1"]
)
def test_onnx_generate_refuses_with_the_files_vocabulary(bigram_lm, case):
    import diag

    model, _ = bigram_lm(vocab=16)
    ids, mask, _, error, message = BAD_PROMPTS[case]
    # ONNX Runtime's Gather would fail on 16 and wrap around silently on -2
    with pytest.raises(error, match=message):
        diag.onnx_generate(model, ids, mask, max_new_tokens=2)


def test_the_vocabulary_of_a_model_is_its_configs(llama):
    assert model_vocab_size(llama) == llama.config.vocab_size == 49152


def test_a_path_given_to_the_torch_side_points_to_onnx_generate():
    with pytest.raises(
        TypeError, match="got str; for an ONNX file or folder, call diag.onnx_generate"
    ):
        TorchBackend("model.onnx")
