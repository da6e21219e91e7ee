"""A prefill in chunks (diag.ort.chunked_prefill) gives the one-shot prefill's logits and
cache bit for bit (at the real positions), and model.generate's tokens, on every tiny architecture, left-padded
batches and sliding windows (past the window) included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.export import export_causal_lm
from diag.generation import onnx_generate
from diag.models import get_untrained_model_with_inputs
from diag.ort import make_session, open_ort_backend
from diag.ort.chunked_prefill import can_chunk, prefill_chunks
from unittests.conftest import SLIDING_VARIANTS, TINY_ARCHITECTURES, left_padded_prompts

CHUNK = 4
#: the models every release chunks: llama and the sliding windows (their masks are the
#: ones a chunk boundary can break); pinned: the rest of the zoo (chunking is the ONNX
#: Runtime driver's, over exports every release validates architecture by architecture)
RELEASE_MODELS = ("llama", *SLIDING_VARIANTS)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(n, marks=[] if n in RELEASE_MODELS else [pytest.mark.pinned])
        for n in [*TINY_ARCHITECTURES, *SLIDING_VARIANTS]
    ],
)
def tiny(request):
    """``(name, model, session)`` over the cached export of a tiny model."""
    model = get_untrained_model_with_inputs(request.param)["model"]
    return request.param, model, make_session(export_causal_lm(model, verify=False).filename)


def _prompts(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of 14 tokens, the second with 5 padding tokens (past a chunk)."""
    return left_padded_prompts(14, (0, 5), high=min(vocab, 1000), seed=1)


def test_chunks_give_the_one_shot_prefill_bit_for_bit(tiny):
    name, model, session = tiny
    ids, mask = _prompts(model.config.vocab_size)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    whole = open_ort_backend(session, prefill_chunk=None)
    chunked = open_ort_backend(session, prefill_chunk=CHUNK)
    assert chunked.prefill_chunk == CHUNK and whole.prefill_chunk is None
    logits, past = whole.prefill(ids, mask, positions)
    logits_c, past_c = chunked.prefill(ids, mask, positions)
    assert past_c.length == past.length == 14
    assert torch.equal(logits_c, logits), name
    # the cache of the real positions; a padding position is masked for every query
    # (its own entry is what a fully masked row gives: on gemma2, a mean over the
    # positions the step sees, which the chunks change)
    real = mask.bool().numpy()
    for a, b in zip(past.to_numpy(), past_c.to_numpy(), strict=True):
        np.testing.assert_array_equal(a.transpose(0, 2, 1, 3)[real], b.transpose(0, 2, 1, 3)[real], err_msg=name)


def test_chunked_generation_matches_torch(tiny):
    name, model, session = tiny
    ids, mask = _prompts(model.config.vocab_size)
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    ours = onnx_generate(
        open_ort_backend(session, prefill_chunk=CHUNK), ids, mask, max_new_tokens=12,
        generation_config=model.generation_config,
    )  # fmt: skip
    assert torch.equal(ours, expected), name


def test_prefill_chunks_and_where_they_apply():
    import dataclasses

    from diag.contract.layout import DIAG_LAYOUT

    assert prefill_chunks(9, 4) == [(0, 4), (4, 8), (8, 9)]
    assert prefill_chunks(4, 4) == [(0, 4)]
    with pytest.raises(ValueError, match="positive number of tokens"):
        prefill_chunks(9, 0)
    assert can_chunk(DIAG_LAYOUT)
    # right padding: the rows' last tokens may lie in any chunk
    assert not can_chunk(dataclasses.replace(DIAG_LAYOUT, padding="right"))
    assert not can_chunk(dataclasses.replace(DIAG_LAYOUT, name="transformers"))


@pytest.mark.slow
def test_smollm2_long_prompt_in_chunks(smollm2):
    """A 400-token prompt (2 chunks of the default size) and a left-padded second row:
    the one-shot prefill's logits bit for bit, model.generate's tokens."""
    from diag.ort.chunked_prefill import PREFILL_CHUNK

    model, tokenizer = smollm2
    text = tokenizer("def print_prime(n):\n    # Print all primes up to n\n")["input_ids"]
    ids = torch.tensor((text * 40)[:400]).repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, :40] = 0
    ids[1, :40] = tokenizer.pad_token_id
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    session = make_session(export_causal_lm(model).filename)
    chunked = open_ort_backend(session)
    assert chunked.prefill_chunk == PREFILL_CHUNK < 400
    logits, _ = open_ort_backend(session, prefill_chunk=None).prefill(ids, mask, positions)
    res = onnx_generate(
        chunked, ids, mask, max_new_tokens=6, generation_config=model.generation_config,
        output_logits=True, return_result=True,
    )  # fmt: skip
    assert torch.equal(res.logits[0], logits)
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(res.sequences, expected)
