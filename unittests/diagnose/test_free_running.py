"""first_divergence: both sides generate freely; scripted logits, then a tiny llama and
its good and broken exports."""

from __future__ import annotations

import json

import pytest
import torch

from diag.diagnose import Divergence, first_divergence


class ScriptedBackend:
    """A StepBackend whose logits come from a table: ``table[step]`` is ``[batch, vocab]``.

    It ignores the tokens it reads, so both sides of a test see exactly the logits the
    test wrote, whatever they choose.
    """

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.vocab_size = table.shape[-1]

    def prefill(self, input_ids, attention_mask, position_ids):
        return self.table[0].clone(), 1

    def decode(self, input_ids, attention_mask, position_ids, past):
        return self.table[past].clone(), past + 1


def _table(steps: int, batch: int, vocab: int) -> torch.Tensor:
    # a clear winner (margin 1) at every step: token (step + row) % vocab
    t = torch.zeros(steps, batch, vocab)
    for s in range(steps):
        for r in range(batch):
            t[s, r, (s + r) % vocab] = 5.0
            t[s, r, (s + r + 1) % vocab] = 4.0
    return t


def test_near_tie_is_reported_benign():
    steps, vocab = 6, 8
    a = _table(steps, 1, vocab)
    # step 3: tokens 3 and 4 tie within 1e-6 on the torch side
    a[3, 0, 4] = 5.0 - 1e-6
    b = a.clone()
    b += 1e-6 * torch.linspace(-1, 1, vocab)  # the usual rounding noise, ~1e-6
    b[3, 0, 4] += 3e-6  # enough to swap the tie
    div = first_divergence(
        ScriptedBackend(a), ScriptedBackend(b), torch.tensor([[1, 2]]), max_new_tokens=steps
    )
    assert div and div.step == 3 and div.batch_index == 0
    assert (div.reference_token, div.other_token) == (3, 4)
    assert div.common_prefix == [0, 1, 2]
    assert div.reference_margin == pytest.approx(1e-6, abs=2e-7)
    assert div.other_margin < 5e-6
    assert div.typical_diff == pytest.approx(1e-6, rel=0.01)
    assert div.near_tie is True
    assert "near tie" in str(div) and "benign" in str(div)
    assert [c.token_id for c in div.reference_top[:2]] == [3, 4]
    assert [c.token_id for c in div.other_top[:2]] == [4, 3]


def test_earliest_row_of_a_batch_and_no_divergence_result():
    steps, vocab = 6, 8
    a = _table(steps, 2, vocab)
    b = a.clone()
    b[4, 0, 7] = 9.0  # row 0 diverges at step 4
    b[2, 1, 0] = 9.0  # row 1 at step 2
    ids = torch.tensor([[1, 2], [3, 4]])
    div = first_divergence(ScriptedBackend(a), ScriptedBackend(b), ids, max_new_tokens=steps)
    assert (div.step, div.batch_index, div.per_row) == (2, 1, [4, 2])
    assert div.other_token == 0 and div.other_top[0].logit == 9.0
    assert div.near_tie is False  # margin 4 against a typical difference of 0
    same = first_divergence(
        ScriptedBackend(a), ScriptedBackend(a.clone()), ids, max_new_tokens=steps
    )
    assert not same and same.step is None and same.per_row == [None, None]
    assert same.num_steps == steps
    assert str(same).startswith("no divergence")
    json.dumps(same.to_dict())


def test_good_export_has_no_divergence(tiny_model, tiny_onnx, prompt, greedy_stream):
    div = first_divergence(tiny_model, tiny_onnx, prompt, max_new_tokens=len(greedy_stream))
    assert isinstance(div, Divergence)
    assert not div.diverged and div.step is None
    assert div.reference_tokens == greedy_stream == div.other_tokens
    assert "no divergence" in str(div)


def test_broken_embedding_diverges_where_the_streams_differ(
    tiny_model, broken_embedding, prompt, greedy_stream, ort_greedy_stream, max_new_tokens
):
    class Tok:
        def decode(self, ids):
            return f"<{ids[0]}>"

    div = first_divergence(
        tiny_model, broken_embedding.path, prompt, max_new_tokens=max_new_tokens, tokenizer=Tok()
    )
    # where the streams really differ: transformers' generate against a plain ORT loop
    onnx_stream = ort_greedy_stream(broken_embedding.path, prompt, max_new_tokens)
    actual = next(
        i for i, (x, y) in enumerate(zip(greedy_stream, onnx_stream, strict=True)) if x != y
    )
    assert div.step == actual == broken_embedding.first_bad_step
    assert div.step > 0  # mid-way, not at the prefill
    assert div.reference_tokens == greedy_stream
    assert div.other_tokens == onnx_stream
    assert div.common_prefix == greedy_stream[: div.step]
    assert (div.reference_token, div.other_token) == (greedy_stream[actual], onnx_stream[actual])
    assert (
        div.reference_top[0].token_id == div.reference_token
        and div.other_top[0].token_id == div.other_token
    )
    assert len(div.reference_top) == 5 and div.reference_top[0].text == f"<{div.reference_token}>"
    assert div.reference_top[0].logit - div.reference_top[1].logit == pytest.approx(
        div.reference_margin
    )
    assert div.typical_diff < 1e-4 < div.max_abs_diff
    assert div.near_tie is False
    text = str(div)
    assert f"first divergence at step {actual}" in text and "not a near tie" in text
    d = div.to_dict()
    assert d["step"] == actual and d["reference_top"][0]["token_id"] == div.reference_token


def test_bad_arguments(tiny_model, tiny_onnx, prompt):
    with pytest.raises(ValueError, match="seed"):
        first_divergence(tiny_model, tiny_onnx, prompt, max_new_tokens=2, do_sample=True)
    with pytest.raises(ValueError, match="output_logits"):
        first_divergence(tiny_model, tiny_onnx, prompt, max_new_tokens=2, output_logits=True)
    with pytest.raises(TypeError, match="unknown decoding option"):
        first_divergence(tiny_model, tiny_onnx, prompt, max_new_tokens=2, temprature=0.5)


def test_sampling_with_a_seed_agrees_on_a_good_export(tiny_model, tiny_onnx, prompt):
    div = first_divergence(
        tiny_model, tiny_onnx, prompt, max_new_tokens=6, do_sample=True, top_k=5, seed=3
    )
    assert not div, str(div)


def test_differences_beyond_rounding_are_never_a_near_tie():
    steps, vocab = 6, 8
    a = _table(steps, 1, vocab)
    a[3, 0, 4] = 5.0 - 0.05  # a close call at step 3
    b = a + 0.3 * torch.linspace(-1, 1, vocab)  # off by 0.3 on a scale of 5 at every step
    div = first_divergence(
        ScriptedBackend(a), ScriptedBackend(b), torch.tensor([[1]]), max_new_tokens=steps
    )
    assert div.step == 3
    assert div.typical_diff == pytest.approx(0.3)
    # the margins (<= 0.05) are within 10x the difference, but 0.3 is 6% of the logits scale
    assert div.near_tie is False
    assert div.verdict.startswith("not rounding")
    assert "6.0% of their scale" in str(div)


def test_first_step_flip_at_rounding_level_is_a_near_tie():
    a = _table(3, 1, 8)
    a[0, 0, 1] = 5.0 - 1e-6
    b = a.clone()
    b[0, 0, 1] += 2e-6
    div = first_divergence(
        ScriptedBackend(a), ScriptedBackend(b), torch.tensor([[1]]), max_new_tokens=3
    )
    assert div.step == 0 and div.typical_diff is None
    assert div.near_tie is True and div.verdict.startswith("near tie")
