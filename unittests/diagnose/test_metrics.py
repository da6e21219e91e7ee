from __future__ import annotations

import pytest
import torch

from diag.diagnose import step_metrics
from diag.diagnose.metrics import margin, max_abs_diff


def test_step_metrics_known_values():
    a = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 0.0, 5.0, 1.0]])
    b = a.clone()
    b[0, 1] = 4.0  # row 0: argmax moves from 0 to 1
    m = step_metrics(a, b, top_k=2)
    assert m["argmax_agree"].tolist() == [False, True]
    assert m["torch_argmax"].tolist() == [0, 2]
    assert m["onnx_argmax"].tolist() == [1, 2]
    assert m["max_abs_diff"].tolist() == [3.0, 0.0]
    assert m["topk_overlap"].tolist() == [1.0, 1.0]  # {0, 1} == {1, 0}
    p, q = torch.softmax(a[0].double(), -1), torch.softmax(b[0].double(), -1)
    expected_kl = float((p * (p.log() - q.log())).sum())
    assert m["kl_div"][0].item() == pytest.approx(expected_kl, rel=1e-12)
    assert m["kl_div"][1].item() == 0.0
    assert m["torch_margin"].tolist() == [2.0, 4.0]
    # top-2 of b row 0 is {1, 0}; with k=1 the sets {0} and {1} do not overlap
    assert step_metrics(a, b, top_k=1)["topk_overlap"].tolist() == [0.0, 1.0]


def test_step_metrics_nan_is_a_difference():
    a = torch.zeros(1, 5)
    b = a.clone()
    b[0, 3] = float("nan")
    assert step_metrics(a, b)["max_abs_diff"].item() == float("inf")


def test_margin_and_max_abs_diff_on_one_step_or_a_batch():
    logits = torch.tensor([[0.0, 2.0, 1.25], [7.0, 7.0, 1.0]])
    assert margin(logits).tolist() == [0.75, 0.0]  # a tie has no margin
    assert float(margin(logits[0])) == 0.75
    assert margin(torch.tensor([[3.0]])).tolist() == [0.0]  # one token: nothing to choose
    assert float(max_abs_diff(logits[0], torch.tensor([0.0, 2.5, 1.0]))) == 0.5
    assert max_abs_diff(logits, logits.flip(0)).tolist() == [7.0, 7.0]
