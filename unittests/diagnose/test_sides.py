"""diag.diagnose.sides: both sides of a comparison decode alike."""

from __future__ import annotations

import pytest
import torch

from diag.diagnose.sides import comparison_options, generate_sides
from diag.generation.generate import generate
from diag.generation.steps import open_steps


def test_comparison_options_are_greedy_unless_sampling_with_a_seed():
    options, seed = comparison_options(None, 4, {"top_k": 3})
    assert (options.do_sample, options.output_logits, options.max_new_tokens, seed) == (
        False,
        True,
        4,
        None,
    )
    with pytest.raises(ValueError, match="needs seed=<int>"):
        comparison_options(None, 4, {"do_sample": True})
    with pytest.raises(ValueError, match="do not pass output_scores"):
        comparison_options(None, 4, {"output_scores": True})
    # a beam search is compared by its decisions, scored with the processed log-probs
    beams, _ = comparison_options(None, 4, {"num_beams": 2})
    assert (beams.num_beams, beams.output_logits, beams.output_scores) == (2, True, True)


def test_generate_sides_draw_the_same_random_numbers(tiny_model, prompt):
    side = open_steps(tiny_model)
    options, seed = comparison_options(
        side.defaults, 5, {"do_sample": True, "seed": 3, "eos_token_id": None}
    )
    a, b = generate_sides(side, side, prompt, None, options, seed)
    expected = generate(
        tiny_model,
        prompt,
        max_new_tokens=5,
        do_sample=True,
        eos_token_id=None,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(a.sequences, expected) and torch.equal(b.sequences, expected)
    assert len(a.logits) == len(b.logits) == 5
