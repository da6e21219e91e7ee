"""OrtBackend on graphs taking logits_to_keep: the prefill computes the last position's
logits only, a decode step its one position, and the last row is the one the
all-positions run computes (hand-written bigram graphs, the tiny zoo's exports)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from diag import contract
from diag.export import export_causal_lm
from diag.export.check.tolerance import default_atol, noise_aware_tolerance
from diag.generation import onnx_generate, open_steps
from diag.helpers.rounding import lm_head_tolerance
from diag.models import get_untrained_model_with_inputs
from diag.ort import OrtBackend, make_session, open_ort_backend


def _replayed_logits(backend: OrtBackend) -> np.ndarray:
    """The raw logits output of the backend's last step, run again on its feeds."""
    return backend.session.run([contract.LOGITS], backend.feeds_as_numpy())[0]


def test_bigram_prefill_and_decode_keep_the_last_position(bigram_lm):
    model, table = bigram_lm(with_logits_to_keep=True)
    backend = open_ort_backend(make_session(model))
    assert backend.contract.has_logits_to_keep
    ids = torch.tensor([[3, 5, 7], [1, 2, 4]])
    logits, past = backend.prefill(ids, torch.ones_like(ids), torch.arange(3).expand(2, 3))
    assert backend.last_feeds[contract.LOGITS_TO_KEEP].tolist() == [2]
    assert _replayed_logits(backend).shape == (2, 1, 16)
    np.testing.assert_array_equal(logits.numpy(), table[[7, 4]])
    nxt = logits.argmax(-1, keepdim=True)
    logits, past = backend.decode(
        nxt, torch.ones(2, 4, dtype=torch.long), torch.full((2, 1), 3), past
    )
    assert backend.last_feeds[contract.LOGITS_TO_KEEP].tolist() == [0]
    assert _replayed_logits(backend).shape == (2, 1, 16) and past.length == 4
    # generation is the same with and without the input
    plain, _ = bigram_lm()
    expected = onnx_generate(plain, ids, max_new_tokens=5)
    assert torch.equal(onnx_generate(model, ids, max_new_tokens=5), expected)


def test_right_padding_reads_each_row_s_last_real_position(bigram_lm):
    # a layout whose attention reads the lengths from the mask (onnxruntime-genai's,
    # attention="gqa"): each row's last real token sits elsewhere, so those positions
    # are computed, each once
    model, table = bigram_lm(with_logits_to_keep=True)
    layout = dataclasses.replace(contract.DIAG_LAYOUT, padding="right")
    backend = open_ort_backend(make_session(model), layout=layout)
    ids = torch.tensor([[3, 5, 7], [0, 2, 9]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    logits, _ = backend.prefill(ids, mask, torch.tensor([[0, 1, 2], [0, 0, 1]]))
    assert backend.last_feeds[contract.LOGITS_TO_KEEP].tolist() == [1, 2]
    np.testing.assert_array_equal(logits.numpy(), table[[7, 9]])


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def tiny(request):
    """``(model, backend)`` over the zoo export (shared with the other modules through
    the export cache)."""
    model = get_untrained_model_with_inputs(request.param)["model"].eval()
    return model, open_steps(export_causal_lm(model, verify=False)).backend


def test_zoo_prefill_is_the_last_row_of_every_position(tiny):
    model, backend = tiny
    assert backend.contract.has_logits_to_keep
    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, past = backend.prefill(ids, mask, positions)
    assert backend.last_feeds[contract.LOGITS_TO_KEEP].tolist() == [8]
    assert _replayed_logits(backend).shape == (2, 1, model.config.vocab_size)
    # the diagnosis asks for every position of the same step
    feeds = backend.feeds_as_numpy()
    feeds.pop(contract.LOGITS_TO_KEEP)
    contract.keep_every_position(feeds, [i.name for i in backend.session.get_inputs()])
    every = backend.session.run([contract.LOGITS], feeds)[0]
    assert every.shape == (2, 9, model.config.vocab_size)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    # the head over one row and over all rows: other MLAS blocking, the same products
    atol = lm_head_tolerance(model, input_ids=ids, attention_mask=mask, position_ids=positions)
    np.testing.assert_allclose(logits.numpy(), every[:, -1], rtol=0, atol=atol)
    # torch against ONNX Runtime: export validation's float32 tolerance (a tiny model's
    # float32 noise is orders of magnitude below it)
    np.testing.assert_allclose(every, expected.numpy(), atol=default_atol(torch.float32))
    # a decode step: one position, [batch, 1, vocab] as before
    nxt = logits.argmax(-1, keepdim=True)
    step_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    backend.decode(nxt, step_mask, positions[:, -1:] + 1, past)
    assert backend.last_feeds[contract.LOGITS_TO_KEEP].tolist() == [0]
    assert _replayed_logits(backend).shape == (2, 1, model.config.vocab_size)


@pytest.mark.slow
def test_smollm2_prefill_keeps_the_last_position(smollm2):
    model, tokenizer = smollm2
    backend = open_steps(export_causal_lm(model)).backend  # the export the other slow tests use
    assert backend.contract.has_logits_to_keep
    enc = tokenizer(["def print_prime(n):", "The capital of France is a city where"],
                    return_tensors="pt", padding=True, padding_side="left")  # fmt: skip
    ids, mask = enc.input_ids, enc.attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, _ = backend.prefill(ids, mask, positions)
    assert _replayed_logits(backend).shape == (2, 1, 49152)
    feeds = backend.feeds_as_numpy()
    feeds[contract.LOGITS_TO_KEEP] = contract.every_position(ids.shape[1])
    every = backend.session.run([contract.LOGITS], feeds)[0]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
    atol = lm_head_tolerance(model, input_ids=ids, attention_mask=mask, position_ids=positions)
    np.testing.assert_allclose(logits.numpy(), every[:, -1], rtol=0, atol=atol)
    # torch against ONNX Runtime on a deep model: export validation's rule, raised to the
    # float32 noise |torch float32 - torch float64| of this prefill
    with torch.no_grad():
        exact = (
            copy.deepcopy(model)
            .double()(input_ids=ids, attention_mask=mask, position_ids=positions)
            .logits[:, -1]
        )
    noise = float((expected.double() - exact).abs().max())
    atol = noise_aware_tolerance(default_atol(torch.float32), noise)
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=0, atol=atol)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))
