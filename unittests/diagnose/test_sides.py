"""diag.diagnose.sides: both sides of a comparison decode alike."""

from __future__ import annotations

import pytest
import torch

from diag.diagnose.sides import (
    compare_sides,
    comparison_options,
    float32_noise,
    generate_side,
    generate_with_noise,
)
from diag.export.check.tolerance import accumulation_length, default_atol
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


def test_compare_sides_draw_the_same_random_numbers(tiny_model, prompt):
    side = open_steps(tiny_model)
    options, seed = comparison_options(
        side.defaults, 5, {"do_sample": True, "seed": 3, "eos_token_id": None}
    )
    a, b, div = compare_sides(side, side, prompt, None, options, seed)
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
    assert (
        div.step is None
        and div.largest_diff == 0.0
        and (div.reference, div.other) == ("model", "model")
    )


def test_compare_sides_reuses_the_reference_run(tiny_model, prompt):
    side = open_steps(tiny_model)
    options, seed = comparison_options(side.defaults, 3, {"eos_token_id": None})
    shorter = comparison_options(side.defaults, 2, {"eos_token_id": None})[0]
    made = generate_side(side, prompt, None, shorter)
    a, b, div = compare_sides(side, side, prompt, None, options, seed, reference_result=made)
    # the reference is the run given (2 steps), not a new one (3 steps)
    assert a is made and len(b.logits) == 3
    assert div.step == 2 and div.reference_token is None


def test_float32_noise_of_a_torch_side_only(tiny_model, prompt):
    side = open_steps(tiny_model)
    options, _ = comparison_options(side.defaults, 3, {"eos_token_id": None})
    result = generate_side(side, prompt, None, options)
    noise = float32_noise(side, prompt, None, options, result)
    # float32 rounding against float64: within the float32 tolerance export validation
    # derives from the model's accumulation length
    assert 0.0 <= noise <= default_atol(torch.float32, accumulation_length(tiny_model))
    backend_side = open_steps(side.backend)
    assert float32_noise(backend_side, prompt, None, options, result) is None


def test_generate_with_noise_is_the_run_and_its_float32_noise(tiny_model, prompt):
    side = open_steps(tiny_model)
    options, _ = comparison_options(side.defaults, 3, {"eos_token_id": None})
    result, noise = generate_with_noise(side, prompt, None, options)
    alone = generate_side(side, prompt, None, options)
    # the same computations in the same order (one thread): equal to the last bit
    assert torch.equal(result.sequences, alone.sequences)
    assert noise == float32_noise(side, prompt, None, options, alone)
    backend_side = open_steps(side.backend)
    result, noise = generate_with_noise(backend_side, prompt, None, options)
    assert torch.equal(result.sequences, alone.sequences) and noise is None
