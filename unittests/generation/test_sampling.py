"""diag.generation.sampling.greedy_tokens: numpy's argmax on the CPU, torch's rule."""

from __future__ import annotations

import torch

from diag.generation.sampling import greedy_tokens


def test_greedy_tokens_is_torch_argmax_with_ties_nan_and_strides():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 1000, generator=g)
    scores[1, 10] = scores[1, 900] = 50.0  # a tie: the first index
    scores[2, 77] = float("nan")  # NaN counts as the highest, as in torch
    scores[3] = float("-inf")
    for s in (scores, scores[:, ::3], scores.double(), scores.half()):
        expected = torch.argmax(s, dim=-1)
        got = greedy_tokens(s)
        assert got.dtype == expected.dtype == torch.int64
        assert torch.equal(got, expected), (got, expected)
    assert greedy_tokens(scores).tolist()[1:] == [10, 77, 0]
