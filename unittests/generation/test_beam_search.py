"""Beam search in diag's loop against model.generate's, on the tiny untrained models:
the same sequences, scores, sequence scores and beam indices, bit for bit (both run the
same torch ops on the same rows in one process)."""

from __future__ import annotations

import pytest
import torch

from diag.generation import generate
from diag.generation.beam_search import BeamSearch, fill_token
from diag.generation.options import DecodingOptions, resolve_options
from unittests.conftest import EVERY_RELEASE_MOE, TINY_ARCHITECTURES, left_padded_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the cases of the issue: beams 2 and 4, returned sequences, length penalty, the
#: three kinds of early stopping, the processors
CASES = {
    "beams2": dict(num_beams=2),
    "beams4-return3": dict(num_beams=4, num_return_sequences=3),
    "penalty-early": dict(num_beams=4, length_penalty=0.5, early_stopping=True),
    "never": dict(num_beams=3, early_stopping="never", length_penalty=2.0),
    "processors": dict(num_beams=4, repetition_penalty=1.3, no_repeat_ngram_size=2),
}


def _beam_outputs(model, ids, mask, seed=None, **kwargs):
    """(model.generate's output, diag's result) of one beam search, each after the same
    seed when sampling."""
    if seed is not None:
        torch.manual_seed(seed)
    expected = model.generate(
        ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kwargs
    )
    if seed is not None:
        torch.manual_seed(seed)
    got = generate(model, ids, mask, return_result=True, output_scores=True, **kwargs)
    return expected, got


def _assert_same_beams(expected, got):
    assert torch.equal(got.sequences, expected.sequences)
    assert torch.equal(got.sequences_scores, expected.sequences_scores)
    assert torch.equal(got.beam_indices, expected.beam_indices.long())
    assert len(got.scores) == len(expected.scores)
    assert all(torch.equal(a, b) for a, b in zip(got.scores, expected.scores, strict=True))


def _frequent_tokens(model, ids, count):
    """The ``count`` tokens a 4-beam search without eos generates most: taken as eos, they
    end hypotheses at several steps (an untrained model rarely produces its own eos)."""
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), num_beams=4, num_return_sequences=4,
        max_new_tokens=12, eos_token_id=None,
    )  # fmt: skip
    tokens, counts = out[:, ids.shape[1] :].unique(return_counts=True)
    return tokens[counts.argsort(descending=True)][:count].tolist()


@pytest.mark.parametrize("case", sorted(CASES))
def test_beam_search_equals_model_generate(tiny_model, random_prompt, case):
    model = tiny_model("llama")
    ids = random_prompt(7, seed=0)
    expected, got = _beam_outputs(
        model, ids, torch.ones_like(ids), max_new_tokens=12, **CASES[case]
    )
    _assert_same_beams(expected, got)
    rows = CASES[case].get("num_return_sequences", 1)
    assert got.sequences.shape == (rows, 19)
    assert got.finish_reasons == ["length"] * rows


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=4, num_return_sequences=2, length_penalty=-0.5, pad_token_id=7),
        dict(num_beams=2, early_stopping=True),
        dict(num_beams=4, num_return_sequences=4, early_stopping="never", length_penalty=1.5),
        dict(num_beams=3, min_new_tokens=3),
    ],
    ids=["short-wins", "early", "never", "min-new"],
)
def test_hypotheses_ending_on_eos(tiny_model, random_prompt, options):
    model = tiny_model("llama")
    ids = random_prompt(6, seed=1)
    eos = _frequent_tokens(model, ids, 2)
    expected, got = _beam_outputs(
        model, ids, torch.ones_like(ids), max_new_tokens=12, eos_token_id=eos, **options
    )
    _assert_same_beams(expected, got)
    if "length_penalty" in options and options["length_penalty"] < 0:
        # a negative penalty favours the short hypotheses: one ended on an eos early
        assert got.finish_reasons[0] == "stop" and got.num_generated_tokens[0] < 12
        assert got.sequences[0, 6 + got.num_generated_tokens[0] :].eq(7).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_sampling_with_a_seed(tiny_model, random_prompt, seed):
    model = tiny_model("llama")
    ids = random_prompt(7, seed=2)
    expected, got = _beam_outputs(
        model, ids, torch.ones_like(ids), seed=seed, max_new_tokens=12,
        num_beams=4, num_return_sequences=2, do_sample=True, top_k=0, temperature=1.5,
    )  # fmt: skip
    _assert_same_beams(expected, got)
    # a generator given explicitly draws what the global seed draws
    again = generate(
        model, ids, max_new_tokens=12, num_beams=4, num_return_sequences=2, do_sample=True,
        top_k=0, temperature=1.5, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    assert torch.equal(again, expected.sequences)


@pytest.mark.parametrize("options", [dict(num_beams=2), dict(num_beams=4, num_return_sequences=2)])
def test_left_padded_batch_of_three(tiny_model, options):
    model = tiny_model("llama")
    ids, mask = left_padded_prompts(7, (0, 3, 2), high=1000, seed=3)
    expected, got = _beam_outputs(model, ids, mask, max_new_tokens=10, **options)
    _assert_same_beams(expected, got)
    assert got.sequences.shape[0] == 3 * options.get("num_return_sequences", 1)


#: every other architecture of the zoo: llama runs on every release above
OTHER_ARCHS = [
    pytest.param(a, marks=pytest.mark.pinned) for a in TINY_ARCHITECTURES if a != "llama"
] + [EVERY_RELEASE_MOE]


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_beam_search_on_the_zoo(tiny_model, random_prompt, arch):
    # pinned: a second architecture of the check llama makes on every release (their
    # caches all reorder through the same transformers call); the MoE one runs everywhere
    model = tiny_model(arch)
    ids = random_prompt(6, seed=4)
    expected, got = _beam_outputs(
        model, ids, torch.ones_like(ids), max_new_tokens=8, num_beams=4, num_return_sequences=2
    )
    _assert_same_beams(expected, got)


def test_max_length_counts_the_prompt(tiny_model, random_prompt):
    model = tiny_model("llama")
    ids = random_prompt(5, seed=5)
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_length=9, num_beams=2)
    got = generate(model, ids, max_length=9, num_beams=2)
    assert got.shape == (1, 9)
    assert torch.equal(got, expected)


def test_beam_search_step_by_hand():
    # one prompt, 2 beams, vocabulary of 3: the first step extends beam 0 only (the
    # others are scored out), its two best tokens become the two hypotheses
    beams = BeamSearch(DecodingOptions(num_beams=2, max_new_tokens=3), 1, 1, fill=0)
    first = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]))
    step = beams.step(torch.tensor([[5], [5]]), first)
    assert (step.tokens.tolist(), step.rows.tolist(), beams.done) == ([1, 2], [0, 0], False)
    # second step: row 1 (5, 2; p=0.3) has a certain continuation, row 0 (5, 1; p=0.6)
    # a split one: 0.3 * 1.0 beats 0.6 * 0.4, so the best hypothesis moves to row 0
    second = torch.log(torch.tensor([[0.4, 0.35, 0.25], [1.0, 1e-9, 1e-9]]))
    step = beams.step(torch.tensor([[5, 1], [5, 2]]), second)
    assert (step.tokens.tolist(), step.rows.tolist(), beams.done) == ([0, 0], [1, 0], False)
    # third and last step: every candidate ends, the best two are the finished ones
    third = torch.log(torch.tensor([[1e-9, 1.0, 1e-9], [1e-9, 1e-9, 1.0]]))
    beams.step(torch.tensor([[5, 2, 0], [5, 1, 0]]), third)
    assert beams.done
    best = beams.finish()
    assert best.sequences.tolist() == [[5, 2, 0, 1]]
    assert best.beam_indices.tolist() == [[0, 1, 0]]
    assert best.lengths == [3]
    expected = (first[0, 2] + second[1, 0] + third[0, 1]) / 3
    assert best.scores.tolist() == pytest.approx([float(expected)], rel=1e-6)


def test_fill_token_follows_transformers():
    assert fill_token(DecodingOptions(eos_token_id=[3, 4], pad_token_id=9)) == 9
    # transformers writes `pad or eos[0]`: a pad id of 0 falls back on the eos
    assert fill_token(DecodingOptions(eos_token_id=3, pad_token_id=0)) == 3
    assert fill_token(DecodingOptions(pad_token_id=9)) == -1


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_beams=2, num_return_sequences=3), "more than num_beams=2"),
        (dict(num_beams=2, early_stopping="sometimes"), "early_stopping must be True"),
        (dict(num_beams=0), "num_beams must be >= 1"),
        (dict(num_beams=2.0), "num_beams must be an int"),
        (dict(num_return_sequences=2), "needs do_sample=True or num_beams"),
    ],
)
def test_bad_beam_options_say_what_to_pass(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        resolve_options(None, None, **options).validate()


def test_streaming_is_refused_with_beams(tiny_model, random_prompt):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="need num_beams=1"):
        generate(model, random_prompt(4, seed=0), num_beams=2, stream=True)
    with pytest.raises(ValueError, match="need num_beams=1"):
        generate(model, random_prompt(4, seed=0), num_beams=2, streamer=print)


def test_a_backend_without_reorder_is_refused(tiny_model, random_prompt):
    from diag.generation import TorchBackend, decode

    class NoReorder:
        """A step backend of the protocol before beam search: no ``reorder``."""

        def __init__(self, model):
            self._inner = TorchBackend(model)
            self.vocab_size = self._inner.vocab_size

        def prefill(self, *args):
            return self._inner.prefill(*args)

        def decode(self, *args):
            return self._inner.decode(*args)

    options = resolve_options(None, None, num_beams=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="lacks; use num_beams=1"):
        decode(NoReorder(tiny_model("llama")), random_prompt(4, seed=0), None, options)


def test_no_new_token_returns_each_prompt_once_per_sequence(tiny_model):
    # model.generate refuses max_new_tokens=0; diag returns the prompts, as without beams
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    got = generate(tiny_model("llama"), ids, max_new_tokens=0, num_beams=4, num_return_sequences=2)
    assert got.tolist() == [[5, 6, 7], [5, 6, 7], [8, 9, 10], [8, 9, 10]]
