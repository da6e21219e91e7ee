"""diag.generation.sampling: greedy_tokens (numpy's argmax on the CPU, torch's rule) and
the token choice strategies."""

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


def test_token_choice_picks_greedy_or_the_draw_model_generate_makes():
    from diag.generation.sampling import Greedy, Sampling, choose_tokens, token_choice

    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    assert isinstance(token_choice(False), Greedy) and isinstance(token_choice(True), Sampling)
    assert torch.equal(token_choice(False)(scores), torch.argmax(scores, dim=-1))
    # sampling: one multinomial draw of the softmax, on the generator given
    expected = torch.multinomial(
        torch.softmax(scores, dim=-1), 1, generator=torch.Generator().manual_seed(7)
    ).squeeze(1)
    got = token_choice(True, torch.Generator().manual_seed(7))(scores)
    assert torch.equal(got, expected)
    same = choose_tokens(scores, do_sample=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(same, expected)
