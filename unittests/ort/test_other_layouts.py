"""onnx_generate on ONNX models made by other tools (onnxruntime-genai's builder,
transformers' exporter): the same tokens as model.generate, greedy, seeded sampling and
left-padded batches; what a layout cannot express is refused with the reason."""

from __future__ import annotations

import pytest
import torch

from diag.contract import ContractError
from diag.generation import onnx_generate, open_steps
from diag.ort.open import open_ort_backend
from diag.ort.session import make_session

FOLDERS = ["genai_tiny_llama", "transformers_tiny_llama", "optimum_tiny_llama"]


@pytest.fixture(scope="module", params=FOLDERS)
def other(request):
    """``(model, backend)`` over a folder another tool wrote."""
    model, folder = request.getfixturevalue(request.param)
    return model, open_steps(str(folder)).backend


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of three lengths, left-padded with the pad token (2)."""
    ids = torch.randint(3, 1000, (3, 8), generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(8)[None] >= torch.tensor([[0], [3], [5]])).long()
    return ids.masked_fill(mask == 0, 2), mask


def test_layout_found(other):
    _, backend = other
    assert backend.layout.name in ("onnxruntime-genai", "transformers", "diag")
    if backend.layout.name == "diag":
        # optimum-onnx names its inputs and outputs as diag does; its folder's
        # generation_config.json gives the defaults
        assert backend.layout.position_ids == "position_ids"
        assert backend.generation_defaults["eos_token_id"] == 2
    elif backend.layout.name == "onnxruntime-genai":
        # GroupQueryAttention: no position ids, a symbolic head size from the config
        assert backend.layout.position_ids is None
        assert backend.layout.padding == "right"
        assert backend.contract.past_shapes[0] == (4, 16)
        assert backend.generation_defaults["eos_token_id"] == 2
    else:
        assert backend.layout.is_pair
        assert backend.layout.files == ("prefill.onnx", "decode.onnx")


def test_greedy_50_tokens(other):
    model, backend = other
    ids, _ = _batch()
    prompt = ids[:1]
    expected = model.generate(prompt, max_new_tokens=50, do_sample=False, eos_token_id=None)
    got = onnx_generate(backend, prompt, max_new_tokens=50, do_sample=False, eos_token_id=None)
    assert got.shape == (1, 58)
    assert torch.equal(got, expected), backend.layout.name


def test_left_padded_batch_of_3(other):
    model, backend = other
    ids, mask = _batch()
    knobs = dict(max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=2)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    got = onnx_generate(backend, ids, mask, **knobs)
    assert torch.equal(got, expected), backend.layout.name


def test_seeded_sampling(other):
    model, backend = other
    ids, mask = _batch()
    knobs = dict(
        do_sample=True, temperature=0.8, top_k=40, top_p=0.9, max_new_tokens=15,
        eos_token_id=None, pad_token_id=2,
    )  # fmt: skip
    torch.manual_seed(3)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    torch.manual_seed(3)
    got = onnx_generate(backend, ids, mask, **knobs)
    assert torch.equal(got, expected), backend.layout.name


@pytest.mark.slow
def test_no_mask_input_refuses_padding(tiny_llama_folder, tmp_path):
    # transformers' exporter writes no attention_mask input when the sample mask is all
    # ones: the layout then cannot express left padding (slow: one more export)
    pytest.importorskip("transformers.exporters", reason="transformers.exporters exists from 5.23")
    from unittests.conftest import export_with_transformers

    model, hf = tiny_llama_folder
    export_with_transformers(hf, tmp_path, with_mask=False)
    backend = open_steps(str(tmp_path)).backend
    assert backend.layout.attention_mask is None and backend.layout.padding == "none"
    ids, mask = _batch()
    with pytest.raises(ValueError, match="no attention_mask input, so it cannot tell padding"):
        onnx_generate(backend, ids, mask, max_new_tokens=2)
    # prompts of one length still run, and right
    same = ids[:, 5:]
    expected = model.generate(same, max_new_tokens=10, do_sample=False, eos_token_id=None)
    assert torch.equal(onnx_generate(backend, same, max_new_tokens=10, eos_token_id=None), expected)


def test_genai_file_alone_says_what_is_missing(genai_tiny_llama):
    # the session of model.onnx without its genai_config.json: the head size is symbolic
    _, folder = genai_tiny_llama
    session = make_session(folder / "model.onnx")
    with pytest.raises(ContractError) as info:
        open_ort_backend(session)
    message = str(info.value)
    assert "must be static, or given by the layout (kv_heads=, head_dim=)" in message
    # one line per kind of problem, not one per cache tensor
    assert len(message.splitlines()) <= 4, message
    assert "(4 tensors)" in message
    # the layout completed by hand drives it
    backend = open_ort_backend(session, layout=open_steps(str(folder)).backend.layout)
    assert onnx_generate(backend, torch.tensor([[1, 5, 7]]), max_new_tokens=3).shape == (1, 6)
