"""first_divergence with num_beams > 1: two beam searches compared by their steps'
decisions (diag.diagnose.beams), on the tiny llama and its export."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import diag
from diag.diagnose import first_divergence
from diag.diagnose.beams import find_beam_divergence
from diag.diagnose.divergence import NEAR_TIE_FACTOR
from diag.diagnose.sides import compare_results
from diag.generation import generate

NUM_BEAMS = 3


def test_good_export_makes_the_same_decisions(tiny_model, tiny_onnx, prompt, max_new_tokens):
    div = first_divergence(
        tiny_model, tiny_onnx, prompt, max_new_tokens=max_new_tokens, num_beams=NUM_BEAMS
    )
    assert not div and div.num_beams == NUM_BEAMS
    expected = tiny_model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
        num_beams=NUM_BEAMS, do_sample=False,
    )  # fmt: skip
    assert div.reference_tokens == div.other_tokens == expected[0, prompt.shape[1] :].tolist()
    # the logits of the same hypotheses were compared at every step
    assert div.largest_diff is not None and 0 < div.largest_diff < 1e-3
    assert str(div).startswith("no divergence")
    sampled = first_divergence(
        tiny_model, tiny_onnx, prompt, max_new_tokens=max_new_tokens, num_beams=NUM_BEAMS,
        do_sample=True, seed=5,
    )  # fmt: skip
    assert not sampled and sampled.reference_tokens != div.reference_tokens


def test_broken_layer_parts_at_the_first_step(tiny_model, broken_layer, prompt, max_new_tokens):
    div = first_divergence(
        tiny_model, broken_layer.path, prompt, max_new_tokens=max_new_tokens, num_beams=NUM_BEAMS
    )
    assert div.step == 0 and div.near_tie is False
    assert div.verdict.startswith("not rounding")
    assert div.typical_diff is None  # nothing agreed before the first step


def _first_new_token_step(result, prompt: torch.Tensor) -> tuple[int, int]:
    """``(k, token)``: the first step >= 2 whose running hypotheses append a token that
    no hypothesis read before (nor the prompt)."""
    seen = set(prompt[0].tolist())
    for k, step in enumerate(result.beam_steps):
        new = [t for t in step.tokens.tolist() if t not in seen]
        if k >= 2 and new:
            return k, new[0]
        seen.update(step.tokens.tolist())
    raise AssertionError("no new token after step 2")


def test_broken_embedding_parts_after_the_step_that_reads_it(
    tiny_model, tiny_onnx, embedding_scaled, prompt, max_new_tokens
):
    torch_run = generate(
        tiny_model, prompt, max_new_tokens=max_new_tokens, num_beams=NUM_BEAMS, do_sample=False,
        return_result=True,
    )  # fmt: skip
    k, token = _first_new_token_step(torch_run, prompt)
    broken = embedding_scaled(tiny_onnx, token)

    class Tok:
        def decode(self, ids):
            return f"<{ids[0]}>"

    div = first_divergence(
        tiny_model, broken, prompt, max_new_tokens=max_new_tokens, num_beams=NUM_BEAMS,
        tokenizer=Tok(),
    )  # fmt: skip
    # the logits agree up to step k (no hypothesis read the token), differ after
    assert div.step == k + 1, str(div)
    assert div.typical_diff < 1e-4 < div.max_abs_diff
    assert div.near_tie is False and div.verdict.startswith("not")
    # the two candidates: each side's choice, scored on both sides
    ours, theirs = div.hypotheses
    assert ours.reference_slot is not None and theirs.other_slot is not None
    assert ours.text == f"<{ours.token_id}>"
    assert div.reference_margin == pytest.approx(ours.reference_score - theirs.reference_score)
    assert div.other_margin == pytest.approx(theirs.other_score - ours.other_score)
    # each side ranks its own choice first
    assert div.reference_margin >= 0 and div.other_margin >= 0
    # the hypothesis the reference's choice extends: the tokens it read, k + 1 of them
    assert len(div.common_prefix) == k + 1
    text = " ".join(str(div).split())
    assert f"first divergence at step {k + 1}, beam search of {NUM_BEAMS} hypotheses" in text
    assert f"row {ours.row} + {ours.token_id} '<{ours.token_id}>': chosen by torch" in text


@pytest.mark.pinned  # float16 rounding of ONNX Runtime's kernels, any transformers
def test_float16_export_agrees_or_parts_at_a_near_tie(tiny_model, prompt, tmp_path):
    half = diag.export_causal_lm(tiny_model, tmp_path / "half.onnx", dtype="float16", verify=False)
    div = first_divergence(tiny_model, half.filename, prompt, max_new_tokens=20, num_beams=4)
    # float16 rounds the logits by ~1e-3 of their scale: never "not rounding"
    assert div.largest_diff is not None and div.largest_diff > 1e-5
    if div:
        assert div.near_tie is True, str(div)
        assert max(div.reference_margin, div.other_margin) <= NEAR_TIE_FACTOR * div.score_noise
        assert "rounding chose another token (benign)" in " ".join(str(div).split())


def test_two_searches_of_other_shapes_are_refused(tiny_model, prompt):
    a = generate(tiny_model, prompt, max_new_tokens=2, num_beams=2, do_sample=False,
                 return_result=True)  # fmt: skip
    b = generate(tiny_model, prompt, max_new_tokens=2, num_beams=3, do_sample=False,
                 return_result=True)  # fmt: skip
    with pytest.raises(ValueError, match="same prompts and num_beams"):
        find_beam_divergence(a, b)
    greedy = generate(tiny_model, prompt, max_new_tokens=2, do_sample=False, return_result=True)
    with pytest.raises(ValueError, match="holds no beam search steps"):
        find_beam_divergence(a, greedy)


def test_a_search_that_stops_earlier_is_named(tiny_model, prompt):
    a = generate(tiny_model, prompt, max_new_tokens=4, num_beams=2, do_sample=False,
                 output_scores=True, return_result=True)  # fmt: skip
    # the other side's search of the prompt closed after step 1
    steps = list(a.beam_steps)
    steps[1] = dataclasses.replace(steps[1], open=torch.tensor([False]))
    b = dataclasses.replace(a, beam_steps=tuple(steps))
    div = find_beam_divergence(a, b, names=("x", "y"))
    assert div.step == 2 and div.hypotheses == [] and div.near_tie is None
    assert div.what == "y ends this prompt's search after step 1, x goes on"


def test_each_differing_prompt_is_reported_as_if_compared_alone(tiny_model):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    a = generate(tiny_model, ids, max_new_tokens=4, num_beams=2, do_sample=False,
                 eos_token_id=None, output_scores=True, return_result=True)  # fmt: skip
    # the other side's searches of both prompts closed after step 1 (prompt 1) and 2
    steps = list(a.beam_steps)
    steps[1] = dataclasses.replace(steps[1], open=torch.tensor([True, False]))
    steps[2] = dataclasses.replace(steps[2], open=torch.tensor([False, False]))
    b = dataclasses.replace(a, beam_steps=tuple(steps))
    div = compare_results(a, b, names=("x", "y"))
    assert (div.step, div.batch_index, div.per_row) == (2, 1, [3, 2])
    assert [d.batch_index for d in div.row_divergences] == [0, 1]
    for p, d in enumerate(div.row_divergences):
        alone = find_beam_divergence(a, b, names=("x", "y"), prompts=[p])
        assert d.to_dict() == {**alone.to_dict(), "row_divergences": []} and str(d) == str(alone)
