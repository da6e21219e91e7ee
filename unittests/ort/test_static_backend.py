"""The static cache driver (diag.ort.cache.InPlaceCache): onnx_generate on a
``cache="static"`` export gives model.generate's tokens on every zoo architecture
(greedy, seeded sampling, a left-padded batch of 3; the sliding-window variants
generate past their window of 8), the buffers are written in place, and a generation
longer than the buffers is refused before the prefill."""

from __future__ import annotations

import pytest
import torch

from diag.generation import onnx_generate, open_steps
from diag.ort.cache import InPlaceCache, StaticPast
from unittests.conftest import (
    SLIDING_VARIANTS,
    STATIC_MAX_LENGTH,
    TINY_ARCHITECTURES,
    left_padded_prompts,
)

PROMPT = 10  # past the window of 8 of the sliding variants already
NEW_TOKENS = 6


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows: no padding, 3 and 6 padding tokens on the left."""
    return left_padded_prompts(PROMPT, (0, 3, 6), high=90, seed=0)


#: the architecture every tested release covers: the one the other tests export anyway;
#: the two sliding-window variants are pinned (CI's pinned phase only: two more static
#: exports of ~10 s each, a second architecture of the same driver); the rest of the
#: zoo runs with the slow tests (once, on the pinned set: 9 more tiny exports)
FAST = ("llama",)


def _marks(name: str) -> list:
    if name in FAST:
        return []
    return [pytest.mark.pinned] if name in SLIDING_VARIANTS else [pytest.mark.slow]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=_marks(n)) for n in TINY_ARCHITECTURES + SLIDING_VARIANTS]
)
def test_static_cache_generates_what_generate_does(static_exports, name):
    model, exported = static_exports(name)
    backend = open_steps(exported).backend
    assert isinstance(backend.cache, InPlaceCache)
    assert backend.max_length == STATIC_MAX_LENGTH
    ids, mask = _prompts()
    config = model.generation_config
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    tokens = onnx_generate(backend, ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                           generation_config=config)  # fmt: skip
    assert expected.shape == (3, PROMPT + NEW_TOKENS)
    assert torch.equal(tokens, expected), name
    knobs = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, max_new_tokens=NEW_TOKENS)
    torch.manual_seed(3)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    torch.manual_seed(3)
    tokens = onnx_generate(backend, ids, mask, generation_config=config, **knobs)
    assert torch.equal(tokens, expected), name


def test_buffers_are_written_in_place(static_exports):
    model, exported = static_exports("llama")
    backend = open_steps(exported).backend
    ids, mask = _prompts()
    positions = (mask.cumsum(-1) - 1).clip(0)
    _, past = backend.prefill(ids, mask, positions)
    assert isinstance(past, StaticPast) and past.length == PROMPT
    before = past[0].numpy()
    assert before.shape[2] == STATIC_MAX_LENGTH
    assert (before[:, :, PROMPT:] == 0).all() and (before[:, :, :PROMPT] != 0).any()
    step_mask = torch.ones((3, PROMPT + 1), dtype=torch.int64)
    step_mask[:, :PROMPT] = mask
    _, after = backend.decode(ids[:, -1:], step_mask, positions[:, -1:] + 1, past)
    # the same OrtValues, one more position written, the others untouched
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(after, past, strict=True))
    assert after.length == PROMPT + 1
    now = after[0].numpy()
    assert (now[:, :, :PROMPT] == before[:, :, :PROMPT]).all()
    assert (now[:, :, PROMPT] != 0).any() and (now[:, :, PROMPT + 1 :] == 0).all()
    # the mask bound covers the buffers: the step's, zeros after it
    bound = backend.last_feeds["attention_mask"]
    assert bound.shape == (3, STATIC_MAX_LENGTH) and bound[:, PROMPT + 1 :].sum() == 0
    assert backend.last_feeds["cache_position"].tolist() == [PROMPT]
    # the buffers say how many positions they hold: a mask that disagrees is refused
    with pytest.raises(ValueError, match=f"the buffers hold {PROMPT + 1} positions but the mask"):
        backend.decode(ids[:, -1:], step_mask, positions[:, -1:] + 1, after)


def test_too_long_a_generation_says_what_to_pass(static_exports):
    model, exported = static_exports("llama")
    ids, mask = _prompts()
    with pytest.raises(ValueError, match=r"max_length=32.*max_new_tokens.*cache='static', max_length=33"):
        onnx_generate(exported, ids, mask, max_new_tokens=STATIC_MAX_LENGTH - PROMPT + 1)
    # diag.generate's loop calls the backend without reserve() too: refused at the step
    backend = open_steps(exported).backend
    with pytest.raises(ValueError, match="max_length=32"):
        backend.prefill(torch.ones((1, STATIC_MAX_LENGTH + 1), dtype=torch.int64),
                torch.ones((1, STATIC_MAX_LENGTH + 1), dtype=torch.int64),
                torch.arange(STATIC_MAX_LENGTH + 1)[None])  # fmt: skip


@pytest.mark.slow
def test_smollm2_static_cache_generates_what_generate_does(smollm2):
    from diag.export import export_causal_lm

    model, tokenizer = smollm2
    exported = export_causal_lm(model, cache="static", max_length=64, verify=False)
    backend = open_steps(exported).backend
    assert isinstance(backend.cache, InPlaceCache)
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any()  # a left-padded batch of 3
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False)
    tokens = onnx_generate(backend, ids, mask, max_new_tokens=16, do_sample=False,
                           generation_config=model.generation_config)  # fmt: skip
    assert torch.equal(tokens, expected)
    knobs = dict(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=16)
    torch.manual_seed(11)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    torch.manual_seed(11)
    tokens = onnx_generate(backend, ids, mask, generation_config=model.generation_config, **knobs)
    assert torch.equal(tokens, expected)
