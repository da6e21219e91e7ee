"""An option given as None means what it means to model.generate, one left out (UNSET)
takes the model's generation_config: diag.generate against model.generate, option by
option, on a tiny model whose generation_config sets that option."""

from __future__ import annotations

import copy

import pytest
import torch

from diag.generation import UNSET, generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT_LENGTH = 6


@pytest.fixture
def llama(tiny_model):
    """The tiny llama, its generation_config restored after the test (the model is
    shared by the session)."""
    model = tiny_model("llama")
    saved = copy.deepcopy(model.generation_config)
    yield model
    model.generation_config = saved


@pytest.fixture
def prompt(random_prompt):
    return random_prompt(PROMPT_LENGTH, seed=1)


def _greedy_token(model, ids, step: int) -> int:
    """The token greedy decoding emits at ``step``: an eos that stops a run there."""
    return int(model.generate(ids, max_new_tokens=step + 1, do_sample=False)[0, -1])


def _configure(model, **values) -> None:
    for name, value in values.items():
        setattr(model.generation_config, name, value)


def _both(model, ids, seed: int = 0, **kwargs):
    """(model.generate, diag.generate) with the same global seed."""
    torch.manual_seed(seed)
    expected = model.generate(ids, **kwargs)
    torch.manual_seed(seed)
    got = generate(model, ids, **kwargs)
    return expected, got


# option -> (what the model's generation_config sets, the other keywords of the call);
# in each, the option left unset and the option given as None generate different tokens
SAMPLED = dict(do_sample=True, top_k=0)
CASES = {
    "max_new_tokens": (dict(max_new_tokens=5), {}),  # None: max_length, 20 new tokens
    "do_sample": (dict(do_sample=True), dict(max_new_tokens=10)),  # None: greedy
    "temperature": (dict(temperature=0.3), dict(max_new_tokens=10, **SAMPLED)),
    "top_k": (dict(top_k=3), dict(max_new_tokens=10, do_sample=True)),  # None: off, not 50
    "top_p": (dict(top_p=0.3), dict(max_new_tokens=10, **SAMPLED)),
    "min_p": (dict(min_p=0.5), dict(max_new_tokens=10, **SAMPLED)),
    "typical_p": (dict(typical_p=0.3), dict(max_new_tokens=10, **SAMPLED)),
    "epsilon_cutoff": (dict(epsilon_cutoff=0.01), dict(max_new_tokens=10, **SAMPLED)),
    "eta_cutoff": (dict(eta_cutoff=0.2), dict(max_new_tokens=10, **SAMPLED)),
    # a penalty < 1 favours the tokens already there: greedy loops on the prompt
    "repetition_penalty": (dict(repetition_penalty=0.05), dict(max_new_tokens=12)),
    "no_repeat_ngram_size": (
        dict(no_repeat_ngram_size=1),
        dict(max_new_tokens=12, repetition_penalty=0.05),
    ),
}


@pytest.mark.parametrize("option", sorted(CASES))
def test_none_like_model_generate(llama, prompt, option):
    config, call = CASES[option]
    _configure(llama, **config)
    expected, got = _both(llama, prompt, **call, **{option: None})
    assert torch.equal(got, expected), option
    # the model's value applies when the option is left out, in both
    unset_expected, unset_got = _both(llama, prompt, **call)
    assert torch.equal(unset_got, unset_expected), option
    assert not torch.equal(got, unset_got), f"{option}=None changed nothing"
    torch.manual_seed(0)
    assert torch.equal(generate(llama, prompt, **call, **{option: UNSET}), unset_got)


def test_eos_none_generates_past_the_models_eos(llama, prompt):
    # the case: model.generate(eos_token_id=None) did not stop where
    # diag.generate did
    eos = _greedy_token(llama, prompt, step=4)
    _configure(llama, eos_token_id=eos)
    expected, got = _both(llama, prompt, max_new_tokens=15, eos_token_id=None)
    assert torch.equal(got, expected)
    assert got.shape[1] - PROMPT_LENGTH == 15  # not stopped
    res = generate(llama, prompt, max_new_tokens=15, return_result=True)
    assert torch.equal(res.sequences, llama.generate(prompt, max_new_tokens=15))
    assert res.finish_reasons == ["stop"] and res.num_generated_tokens == [5]


@pytest.mark.parametrize("option", ["min_new_tokens", "min_length"])
def test_none_drops_the_models_minimum_length(llama, prompt, option):
    eos = _greedy_token(llama, prompt, step=4)
    _configure(llama, eos_token_id=eos, **{option: 30})
    expected, got = _both(llama, prompt, max_new_tokens=30, **{option: None})
    assert torch.equal(got, expected)
    assert got.shape[1] - PROMPT_LENGTH == 5  # stops on the eos again
    unset_expected, unset_got = _both(llama, prompt, max_new_tokens=30)
    assert torch.equal(unset_got, unset_expected)
    assert unset_got.shape[1] - PROMPT_LENGTH == 30


def test_max_new_tokens_none_falls_back_on_the_models_max_length(llama, prompt):
    _configure(llama, max_new_tokens=5, max_length=15)
    expected, got = _both(llama, prompt, max_new_tokens=None)
    assert torch.equal(got, expected)
    assert got.shape[1] == 15  # max_length counts the prompt


def test_pad_none_pads_with_the_eos(llama, random_prompt, left_pad):
    ids, mask = left_pad([random_prompt(6, seed=2), random_prompt(6, seed=3)], pad_id=2)
    sampled = dict(max_new_tokens=15, do_sample=True, attention_mask=mask)
    torch.manual_seed(3)
    eos = int(llama.generate(ids, **sampled)[0, 6 + 3])  # ends row 0 early
    _configure(llama, eos_token_id=eos, pad_token_id=7)
    expected, got = _both(llama, ids, seed=3, pad_token_id=None, **sampled)
    assert torch.equal(got, expected)
    assert got[0, 6 + 4 :].tolist() == [eos] * 11  # the finished row is padded with eos
    unset_expected, unset_got = _both(llama, ids, seed=3, **sampled)
    assert torch.equal(unset_got, unset_expected)
    assert unset_got[0, 6 + 4 :].tolist() == [7] * 11


@pytest.mark.parametrize("option", ["output_scores", "output_logits"])
def test_output_none_returns_nothing(llama, prompt, option):
    _configure(llama, **{option: True})
    field = option.removeprefix("output_")
    given = llama.generate(prompt, max_new_tokens=3, return_dict_in_generate=True, **{option: None})
    res = generate(llama, prompt, max_new_tokens=3, return_result=True, **{option: None})
    assert getattr(given, field) is None and getattr(res, field) is None
    unset = llama.generate(prompt, max_new_tokens=3, return_dict_in_generate=True)
    res = generate(llama, prompt, max_new_tokens=3, return_result=True)
    assert len(getattr(unset, field)) == len(getattr(res, field)) == 3


@pytest.mark.parametrize(
    "config, kwargs, rejected",
    [
        (dict(do_sample=True, num_return_sequences=2), dict(num_return_sequences=None), None),
        ({}, dict(num_beams=None), None),
        (dict(max_length=15), dict(max_length=None), None),
        ({}, dict(max_new_tokens=None, max_length=None), "max_length"),
    ],
    ids=["num_return_sequences", "num_beams", "max_length", "both_lengths"],
)
def test_none_that_model_generate_rejects(llama, prompt, config, kwargs, rejected):
    _configure(llama, **config)
    rejected = rejected or next(iter(kwargs))
    with pytest.raises((TypeError, ValueError)):
        llama.generate(prompt, **kwargs)
    with pytest.raises(ValueError, match=f"{rejected}=None is rejected by model.generate too"):
        generate(llama, prompt, **kwargs)
