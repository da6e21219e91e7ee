"""diag.export.make.logits_to_keep: the traced forward's example positions and dimension
(the export itself: test_export_causal_lm.py, every zoo architecture)."""

from __future__ import annotations

import copy

import pytest
import torch

from diag import contract
from diag.export.make.logits_to_keep import add_logits_to_keep, example_positions
from diag.helpers.cache_helper import cache_to_list
from diag.helpers.rounding import lm_head_tolerance
from diag.models import get_untrained_model_with_inputs, make_dummy_inputs


def test_example_positions_repeat_and_avoid_the_other_dimensions():
    assert example_positions(3, set()).tolist() == [0, 1, 2, 0]
    assert example_positions(2, {3, 4}).tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_added_to_the_trace_inputs_the_forward_keeps_those_positions(arch):
    model = get_untrained_model_with_inputs(arch)["model"].eval()
    inputs, dynamic_shapes = make_dummy_inputs(model)
    cache = cache_to_list(
        next(v for k, v in inputs.items() if k not in contract.DIAG_LAYOUT.token_inputs)
    )
    sizes = {*inputs["input_ids"].shape, *inputs["attention_mask"].shape}
    sizes |= {d for pair in cache for t in pair for d in t.shape}
    with torch.no_grad():
        # on a copy: the forward appends to the cache it is given
        every = model(**copy.deepcopy(inputs)).logits
    # the same products over fewer rows take other sgemm blocking paths (MKL on AVX-512):
    # equal within the rounding of the head's product, not bit for bit
    atol = lm_head_tolerance(model, **inputs)
    assert add_logits_to_keep(model, inputs, dynamic_shapes)
    keep = inputs["logits_to_keep"]
    assert keep.dtype == torch.int64 and keep.dim() == 1 and len(keep) not in sizes
    assert dynamic_shapes["logits_to_keep"][0].__name__ == contract.DIM_KEEP
    with torch.no_grad():
        kept = model(**copy.deepcopy(inputs)).logits
    torch.testing.assert_close(kept, every[:, keep], rtol=0, atol=atol)


def test_a_forward_without_the_argument_is_left_alone():
    class Plain(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    inputs, dynamic_shapes = {"input_ids": torch.zeros(2, 3, dtype=torch.int64)}, {}
    assert not add_logits_to_keep(Plain(), inputs, dynamic_shapes)
    assert list(inputs) == ["input_ids"] and dynamic_shapes == {}
    assert (
        contract.DIAG_LAYOUT.input_names(1, with_logits_to_keep=False)[-1]
        == "past_key_values.0.value"
    )
