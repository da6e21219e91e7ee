"""diag.contract.positions: the position ids every side feeds a step with."""

from __future__ import annotations

import pytest
import torch

from diag.contract.positions import position_ids


# the rule is diag's, on plain tensors: no transformers release changes it
@pytest.mark.pinned
def test_position_ids_like_transformers():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
    assert torch.equal(position_ids(mask), expected)
    assert position_ids(mask).dtype == torch.int64


# the rule is diag's, on plain tensors: no transformers release changes it
@pytest.mark.pinned
def test_position_ids_of_a_step_are_the_last_ones_of_the_whole_mask():
    # a past of 3 (one left pad) then a step of 2 tokens
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids(mask, new=2).tolist() == [[2, 3], [3, 4]]
    assert position_ids(mask, new=5).tolist() == position_ids(mask).tolist()
