"""resolve_options: the layers of model.generate, and the checks on bad values."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

import diag
from diag.generation import UNSET, DecodingOptions, resolve_options
from diag.generation.decoding import check_inputs


def test_transformers_defaults_apply_when_unset():
    opts = resolve_options(do_sample=True)
    # transformers 5 samples with top_k=50 unless told otherwise
    assert opts.top_k == 50
    assert opts.top_p == 1.0 and opts.temperature == 1.0 and opts.repetition_penalty == 1.0
    assert opts.num_new_tokens(prompt_length=7) == 20
    assert opts.num_return_sequences == 1


def test_layers_kwargs_over_config_over_model_defaults():
    model_defaults = GenerationConfig(eos_token_id=2, pad_token_id=2, top_k=10, temperature=0.5)
    config = {"top_k": 3, "top_p": 0.8}
    opts = resolve_options(config, model_defaults, top_p=0.5, do_sample=True)
    assert opts.top_p == 0.5  # keyword wins
    assert opts.top_k == 3  # generation_config wins over the model's
    assert opts.temperature == 0.5  # model default, nobody overrode it
    assert opts.eos_token_id == 2 and opts.pad_token_id == 2
    assert "temperature" in opts.defaults_used and "top_p" not in opts.defaults_used


def test_unset_keyword_means_not_given_and_none_is_a_value():
    config = GenerationConfig(top_k=7, eos_token_id=3, max_new_tokens=9)
    unset = resolve_options(
        config, do_sample=True, top_k=UNSET, eos_token_id=UNSET, max_new_tokens=UNSET
    )
    assert (unset.top_k, unset.eos_token_ids, unset.max_new_tokens) == (7, [3], 9)
    assert {"top_k", "eos_token_id", "max_new_tokens"} <= set(unset.defaults_used)
    given = resolve_options(
        config, do_sample=True, top_k=None, eos_token_id=None, max_new_tokens=None
    )
    # None is set, as model.generate sets it: no top-k, no eos, max_length decides
    assert (given.top_k, given.eos_token_ids, given.max_new_tokens) == (None, [], None)
    assert given.num_new_tokens(prompt_length=5) == 20
    assert not {"top_k", "eos_token_id", "max_new_tokens"} & set(given.defaults_used)
    # without a configuration, None is not transformers' default either (top_k=50)
    assert resolve_options(do_sample=True, top_k=None).top_k is None
    assert resolve_options(do_sample=True).top_k == 50


def test_unset_has_a_readable_repr_and_survives_copies():
    import copy
    import inspect
    import pickle

    assert repr(UNSET) == str(UNSET) == "UNSET"
    assert copy.deepcopy(UNSET) is UNSET and pickle.loads(pickle.dumps(UNSET)) is UNSET
    for function in (diag.generate, diag.onnx_generate):
        top_k = inspect.signature(function).parameters["top_k"]
        assert top_k.default is UNSET and str(top_k).endswith(" = UNSET")
    with pytest.raises(TypeError, match="resolved values, not UNSET"):
        DecodingOptions(top_k=UNSET)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_return_sequences=None),
        dict(num_beams=None),
        dict(max_length=None),
        dict(max_length=None, max_new_tokens=None),
    ],
)
def test_none_that_model_generate_rejects_raises(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name}=None is rejected by model.generate too"):
        resolve_options(**kwargs)


def test_max_length_none_is_fine_with_max_new_tokens():
    assert resolve_options(max_length=None, max_new_tokens=4).num_new_tokens(5) == 4


def test_greedy_with_several_sequences_raises_like_model_generate():
    with pytest.raises(ValueError, match="num_return_sequences=2 needs do_sample=True"):
        resolve_options(num_return_sequences=2).validate()
    resolve_options(num_return_sequences=2, do_sample=True).validate()


def test_max_length_and_max_new_tokens():
    assert resolve_options(max_length=12).num_new_tokens(prompt_length=5) == 7
    assert resolve_options(max_length=12, max_new_tokens=3).num_new_tokens(5) == 3
    with pytest.raises(ValueError, match="shorter than the prompt"):
        resolve_options(max_length=4).num_new_tokens(5)


def test_eos_list_and_pad_fallback():
    opts = resolve_options(eos_token_id=[5, 9])
    assert opts.eos_token_ids == [5, 9]
    assert opts.effective_pad_token_id == 5  # first eos, like transformers
    assert resolve_options(eos_token_id=5, pad_token_id=0).effective_pad_token_id == 0
    assert DecodingOptions().effective_pad_token_id is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
        (dict(do_sample=True, top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, temperature=0.0), "temperature must be > 0"),
        (dict(do_sample=True, temperature=-1.0), "temperature must be > 0"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
        (dict(num_return_sequences=0), "num_return_sequences"),
        (dict(eos_token_id=100), r"outside the vocabulary \[0, 100\)"),
        (dict(eos_token_id=[3, -1]), "outside the vocabulary"),
    ],
)
def test_bad_values_give_clear_errors(kwargs, match):
    opts = resolve_options(**kwargs)
    with pytest.raises(ValueError, match=match):
        opts.validate(vocab_size=100)


def test_unsupported_and_unknown_options():
    with pytest.raises(ValueError, match="num_beam_groups=2 is not supported"):
        resolve_options(num_beam_groups=2)
    with pytest.raises(TypeError, match="unknown decoding option"):
        resolve_options(top_kk=3)
    with pytest.raises(TypeError, match="GenerationConfig or a dict"):
        resolve_options(generation_config=[("top_k", 3)])
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        resolve_options(max_new_tokens=2.5).validate()


def test_check_inputs_errors():
    with pytest.raises(ValueError, match="empty"):
        check_inputs(torch.zeros((1, 0), dtype=torch.long), None)
    with pytest.raises(ValueError, match="empty"):
        check_inputs(torch.zeros((0, 3), dtype=torch.long), None)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\)"):
        check_inputs(torch.ones((1, 3), dtype=torch.long), torch.ones((1, 2)))
    with pytest.raises(ValueError, match="all zeros"):
        check_inputs(torch.ones((2, 3), dtype=torch.long), torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(TypeError, match="tokenize the text first"):
        check_inputs([[1, 2, 3]], None)
    with pytest.raises(TypeError, match="integer token ids"):
        check_inputs(torch.ones((1, 3)), None)
    ids, mask = check_inputs(torch.tensor([4, 5, 6]), None)
    assert ids.shape == (1, 3) and mask.tolist() == [[1, 1, 1]]
