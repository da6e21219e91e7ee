"""contract.feeds.step_feeds: one step's ONNX feeds, by a layout's names, in the graph
inputs' types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.contract import DIAG_LAYOUT, PLAIN_LAYOUT, STATIC_LAYOUT, past_key_name, past_value_name
from diag.contract.feeds import as_array, step_feeds
from diag.contract.positions import position_ids

# what the feeds are is diag's contract: it does not depend on the transformers release
pytestmark = pytest.mark.pinned

IDS = torch.tensor([[7, 8], [9, 10]])
MASK = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
POSITIONS = position_ids(MASK, new=2)
INTS = dict.fromkeys(["input_ids", "attention_mask", "position_ids"], np.int64)


def test_each_input_in_the_graph_s_type_and_order():
    cache = [torch.full((2, 1, 2, 3), float(i), dtype=torch.bfloat16) for i in range(4)]
    types = {
        "input_ids": np.int32,
        past_key_name(0): np.float32,
        "attention_mask": np.int64,
        past_value_name(0): np.float32,
        past_key_name(1): np.float16,
        past_value_name(1): np.float32,
        "position_ids": np.int64,
        "logits_to_keep": np.int64,
    }
    feeds = step_feeds(types, IDS, MASK, POSITIONS, cache=cache, complete=True)
    assert list(feeds) == list(types)
    assert {k: v.dtype for k, v in feeds.items()} == {k: np.dtype(t) for k, t in types.items()}
    assert feeds["input_ids"].tolist() == IDS.tolist()
    assert feeds["position_ids"].tolist() == [[1, 2], [2, 3]]
    # every position unless asked otherwise
    assert feeds["logits_to_keep"].tolist() == [0, 1]
    assert feeds[past_key_name(1)].flatten().tolist() == [2.0] * 12
    kept = step_feeds(types, IDS, MASK, POSITIONS, logits_to_keep=np.array([1]))
    assert kept["logits_to_keep"].tolist() == [1] and past_key_name(0) not in kept


def test_what_the_graph_or_the_layout_does_not_take_is_left_out():
    without_positions = {"input_ids": np.int64, "attention_mask": np.int64}
    assert sorted(step_feeds(without_positions, IDS, MASK, POSITIONS)) == sorted(without_positions)
    # the plain layout names no position_ids nor logits_to_keep: neither is fed
    types = dict(INTS, logits_to_keep=np.int64)
    feeds = step_feeds(types, IDS, MASK, POSITIONS, layout=PLAIN_LAYOUT)
    assert sorted(feeds) == ["attention_mask", "input_ids"]


def test_a_static_step_pads_the_mask_and_says_where_it_writes():
    types = dict(INTS, cache_position=np.int64)
    feeds = step_feeds(types, IDS, MASK, POSITIONS, layout=STATIC_LAYOUT, max_length=6)
    assert feeds["attention_mask"].tolist() == [[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert feeds["cache_position"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="does not fit a static cache of 3"):
        step_feeds(types, IDS, MASK, POSITIONS, layout=STATIC_LAYOUT, max_length=3)


def test_a_missing_input_is_named():
    types = dict(INTS, **{past_key_name(0): np.float32, past_value_name(0): np.float32})
    with pytest.raises(ValueError, match=r"expects inputs \['past_key_values.0.key', "):
        step_feeds(types, IDS, MASK, POSITIONS, complete=True)
    assert DIAG_LAYOUT.past.names(1) == [past_key_name(0), past_value_name(0)]


def test_as_array_is_contiguous_and_keeps_its_type_by_default():
    column = torch.arange(6).reshape(2, 3)[:, 1:]
    array = as_array(column)
    assert array.flags.c_contiguous and array.dtype == np.int64
    assert array.tolist() == [[1, 2], [4, 5]]
