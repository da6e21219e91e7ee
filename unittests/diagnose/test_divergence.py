"""find_divergence and its rule, on tokens and logits written by the tests."""

from __future__ import annotations

import pytest
import torch

from diag.diagnose import find_divergence
from diag.diagnose.divergence import NEAR_TIE_FACTOR, first_divergent_step, near_tie_verdict


def test_first_divergent_step():
    assert first_divergent_step([1, 2, 3], [1, 2, 3]) is None
    assert first_divergent_step([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergent_step([1, 2, 2], [1, 2]) == 2


class _Tok:
    def decode(self, ids):
        return f"t{ids[0]}"


def test_find_divergence_on_generations_already_made():
    """What diag compare gives: the rows' tokens and the logits each side kept."""
    ref_logits = [torch.tensor([[0.0, 3.0, 1.0, 2.9]]), torch.tensor([[5.0, 0.0, 0.0, 0.0]])]
    other_logits = [torch.tensor([[0.0, 3.0, 1.0, 2.9]]), torch.tensor([[0.0, 0.0, 0.0, 6.0]])]
    div = find_divergence(
        [[1, 0]], [[1, 3]], ref_logits, other_logits, names=("hf", "onnx"), tokenizer=_Tok(),
        num_candidates=2,
    )  # fmt: skip
    assert (div.step, div.reference_token, div.other_token) == (1, 0, 3)
    assert (div.reference, div.other, div.common_prefix) == ("hf", "onnx", [1])
    assert div.reference_top[0].token_id == 0 and len(div.reference_top) == 2
    assert div.other_top[0].token_id == 3 and div.other_top[0].logit == 6.0
    assert div.reference_margin == pytest.approx(5.0)
    assert div.other_margin == pytest.approx(6.0)
    # step 0 agreed exactly: margins of 5 and 6 are far above that usual difference
    assert (div.typical_diff, div.max_abs_diff, div.largest_diff) == (0.0, 6.0, 6.0)
    assert div.near_tie is False and div.verdict.startswith("not a near tie")
    text = str(div)
    assert "first divergence at step 1, after 1 identical tokens" in text
    assert "  hf   chose 0 't0' (margin over its 2nd: 5)" in text
    assert "  onnx top: 3 't3' (6) | " in text
    assert "onnx computes something different from hf" in text
    same = find_divergence([[1, 0]], [[1, 0]], ref_logits, ref_logits, names=("hf", "onnx"))
    assert not same and same.step is None and same.largest_diff == 0.0
    assert str(same) == "no divergence: hf and onnx generated the same 2 tokens"


def test_largest_diff_stops_at_each_rows_divergence():
    ref = [torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    other = [torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [9.0, 0.0]])]
    # row 1 diverges at step 0 (diff 1); the 9 of its step 1 comes after it and does not
    # count; row 0 agrees on both steps (diff 0.5 at step 0)
    div = find_divergence([[0, 0], [0, 1]], [[0, 0], [1, 0]], ref, other)
    assert (div.step, div.batch_index, div.per_row) == (0, 1, [None, 0])
    assert div.largest_diff == 1.0 and div.max_abs_diff == 1.0


def test_find_divergence_without_logits_or_after_a_stop():
    div = find_divergence([[4, 5, 2]], [[4, 7, 2]], names=("hf", "torch"))
    assert (div.step, div.reference_token, div.other_token) == (1, 5, 7)
    assert div.reference_top == [] and div.reference_margin is None and div.largest_diff is None
    assert div.near_tie is None and div.verdict is None
    assert "logits not available" in str(div)
    # one side stopped (eos 2) where the other went on: no logits on its side there
    logits = [torch.tensor([[0.0, 1.0, 2.0]])] * 2
    div = find_divergence([[1, 2]], [[1, 2, 0]], logits, logits + [torch.zeros(1, 3)])
    assert (div.step, div.reference_token, div.other_token) == (2, None, 0)
    assert div.reference_top == [] and len(div.other_top) == 3
    assert div.near_tie is None and div.largest_diff == 0.0
    assert "  torch stopped" in str(div)
    with pytest.raises(ValueError, match="rows"):
        find_divergence([[1]], [[1], [2]])


def test_near_tie_verdict_branches():
    logits = torch.tensor([5.0, 4.9, 0.0])  # scale 5
    # margins within NEAR_TIE_FACTOR x the usual difference: rounding
    near, why = near_tie_verdict(logits, 0.1, 0.05, 0.1 / NEAR_TIE_FACTOR, 0.02, ("a", "b"))
    assert near is True and why.startswith("near tie") and "between a and b (0.01)" in why
    # the same margins with a tenfold smaller usual difference: suspect
    near, why = near_tie_verdict(logits, 0.1, 0.05, 0.001, 0.02, ("a", "b"))
    assert near is False and why.startswith("not a near tie") and "b computes" in why
    # a usual difference above NOISE_RTOL of the scale: never a near tie
    near, why = near_tie_verdict(logits, 0.1, 0.05, 0.06, 0.06, ("a", "b"))
    assert near is False and "1.2% of their scale (5)" in why
    # at the first step, the difference there stands for the usual one
    near, why = near_tie_verdict(logits, 0.1, 0.05, None, 0.02, ("a", "b"))
    assert near is True and "(0.02)" in why


def test_near_tie_verdict_allows_for_the_dtype():
    """bfloat16 rounds each value by up to 2**-9: a usual difference of 3% of the scale
    is rounding there, not in float32 or float16; 20% is not rounding in any dtype."""
    logits = torch.tensor([5.0, 4.9, 0.0])  # scale 5
    for dtype in (None, torch.float32, torch.float16):
        near, why = near_tie_verdict(logits, 0.1, 0.05, 0.15, 0.15, ("a", "b"), dtype)
        assert near is False and "not rounding" in why, dtype
    near, why = near_tie_verdict(logits, 0.1, 0.05, 0.15, 0.15, ("a", "b"), torch.bfloat16)
    assert near is True and why.startswith("near tie")
    near, why = near_tie_verdict(logits, 0.1, 0.05, 1.0, 1.0, ("a", "b"), torch.bfloat16)
    assert near is False and "20.0% of their scale" in why


def test_near_tie_verdict_of_a_quantized_side():
    logits = torch.tensor([5.0, 4.9, 0.0])  # scale 5
    # a difference far beyond rounding, from an int4 side: its expected error
    near, why = near_tie_verdict(logits, 0.1, 0.05, 0.06, 0.06, ("a", "b"), quantized_bits=4)
    assert near is False and why.startswith("expected int4 quantization error")
    assert "1.2% of their scale 5" in why and "margin was 0.1 in a" in why
    assert "computes something different" not in why
    # a near tie stays a near tie, quantized or not
    near, why = near_tie_verdict(
        logits, 0.1, 0.05, 0.1 / NEAR_TIE_FACTOR, 0.02, ("a", "b"), quantized_bits=4
    )
    assert near is True and why.startswith("near tie")


@pytest.mark.pinned  # comparison of tensors written here, any transformers
def test_each_differing_row_is_reported_as_if_compared_alone():
    ref = [
        torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.9], [1.0, 0.0, 0.0]]),
        torch.tensor([[5.0, 0.0, 4.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    ]
    other = [
        torch.tensor([[0.0, 3.0, 1.0], [1.9, 0.0, 2.0], [1.0, 0.5, 0.0]]),
        torch.tensor([[4.0, 0.0, 5.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.25]]),
    ]
    rows_a, rows_b = [[1, 0], [0, 1], [0, 0]], [[1, 2], [2, 1], [0, 0]]
    div = find_divergence(rows_a, rows_b, ref, other, tokenizer=_Tok(), num_candidates=2)
    # the first divergence is row 1's (step 0); row 2 agrees and has no report
    assert (div.step, div.batch_index, div.per_row) == (0, 1, [1, 0, None])
    assert [d.batch_index for d in div.row_divergences] == [0, 1]
    assert div.largest_diff == 1.0  # row 0 at step 1; row 1 differs by 0.1, row 2 by 0.5

    def fields(d):
        return {k: v for k, v in d.to_dict().items() if k not in ("batch_index", "row_divergences")}

    for r, d in zip([0, 1], div.row_divergences, strict=True):
        alone = find_divergence(
            [rows_a[r]], [rows_b[r]], [s[r : r + 1] for s in ref], [s[r : r + 1] for s in other],
            tokenizer=_Tok(), num_candidates=2,
        )  # fmt: skip
        assert fields(d) == fields(alone) and str(d) == str(alone)
    first = div.row_divergences[1]
    assert (div.reference_top, div.verdict) == (first.reference_top, first.verdict)
