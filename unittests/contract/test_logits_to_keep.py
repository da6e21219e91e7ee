"""diag.contract.logits_to_keep: what to feed, and whether a graph takes it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from diag.contract import (
    DIAG_LAYOUT,
    LOGITS_TO_KEEP,
    every_position,
    keep_every_position,
    last_position,
    read_contract,
)
from diag.contract.detect import detect_layout


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_positions():
    assert every_position(3).tolist() == [0, 1, 2] and every_position(3).dtype == np.int64
    assert last_position(7).tolist() == [6] and last_position(1).tolist() == [0]
    with pytest.raises(ValueError, match="at least one position"):
        last_position(0)


def test_keep_every_position_only_where_the_graph_takes_it():
    ids = np.zeros((2, 4), dtype=np.int64)
    feeds = keep_every_position({"input_ids": ids}, ["input_ids", LOGITS_TO_KEEP])
    assert feeds[LOGITS_TO_KEEP].tolist() == [0, 1, 2, 3]
    assert LOGITS_TO_KEEP not in keep_every_position({"input_ids": ids}, ["input_ids"])
    # the caller's own positions are kept
    chosen = {"input_ids": ids, LOGITS_TO_KEEP: np.array([1])}
    assert keep_every_position(chosen, [LOGITS_TO_KEEP])[LOGITS_TO_KEEP].tolist() == [1]


def test_read_contract_says_whether_the_graph_takes_it(bigram_lm):
    with_keep, table = bigram_lm(with_logits_to_keep=True)
    session = _session(with_keep)
    layout = detect_layout(session)
    assert layout is DIAG_LAYOUT
    info = read_contract(session, layout=layout)
    assert info.has_logits_to_keep and info.int_types[LOGITS_TO_KEEP] == np.int64
    assert info.past_names == [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
    # the graph computes the rows it is given
    ids = np.array([[3, 5, 7]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones((1, 3), dtype=np.int64),
             "position_ids": np.arange(3)[None], LOGITS_TO_KEEP: last_position(3)}  # fmt: skip
    for i in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, 2, 0, 4), dtype=np.float32)
    logits = session.run(["logits"], feeds)[0]
    assert logits.shape == (1, 1, 16)
    np.testing.assert_array_equal(logits[0, 0], table[7])

    without, _ = bigram_lm()
    plain = read_contract(_session(without))
    assert not plain.has_logits_to_keep and LOGITS_TO_KEEP not in plain.int_types
    assert detect_layout(_session(without)).logits_to_keep is None
