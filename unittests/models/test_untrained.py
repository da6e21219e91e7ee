"""The tiny model zoo: forward pass on the dummy inputs, varied greedy tokens."""

from __future__ import annotations

import copy

import pytest
import torch

from diag.compat.transformers_api import cache_argument, output_cache
from diag.helpers.cache_helper import cache_to_list
from diag.models import get_untrained_model_with_inputs, list_tiny_models
from diag.models.untrained import get_tiny_config
from unittests.conftest import MOE_ARCHITECTURES, TINY_ARCHITECTURES, moe_params


def test_list_tiny_models_matches_the_suite():
    assert sorted(TINY_ARCHITECTURES + MOE_ARCHITECTURES) == list_tiny_models()


@pytest.mark.parametrize("name", TINY_ARCHITECTURES + moe_params())
def test_forward_on_dummy_inputs(name):
    data = get_untrained_model_with_inputs(name)
    model, inputs, config = data["model"], data["inputs"], data["config"]
    assert data["name"] == name
    assert not model.training
    assert config.vocab_size == 49152
    assert config.num_hidden_layers == 2
    cache = inputs[cache_argument(model)]
    pairs = cache_to_list(cache)
    assert len(pairs) == 2
    assert all(k.shape[:3] == (2, k.shape[1], 5) for k, _ in pairs)
    # the forward appends to the cache it is given: keep the inputs intact
    with torch.no_grad():
        out = model(**copy.deepcopy(inputs))
    assert out.logits.shape == (2, 3, 49152)
    assert output_cache(out).get_seq_length() == 8
    assert cache.get_seq_length() == 5
    assert torch.isfinite(out.logits).all()
    # same seed, same weights and inputs
    again = get_untrained_model_with_inputs(name)
    for (n1, p1), (n2, p2) in zip(
        model.named_parameters(), again["model"].named_parameters(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert torch.equal(inputs["input_ids"], again["inputs"]["input_ids"])
    # another seed, other weights
    other = get_untrained_model_with_inputs(name, seed=1)
    first = next(iter(other["model"].parameters()))
    assert not torch.equal(first, next(iter(model.parameters())))


@pytest.mark.parametrize("name", TINY_ARCHITECTURES)
def test_dynamic_dims_distinct(name):
    data = get_untrained_model_with_inputs(name)
    batch, seq = data["inputs"]["input_ids"].shape
    cache_len = data["inputs"]["attention_mask"].shape[1]
    name = cache_argument(data["model"])
    pairs = cache_to_list(data["inputs"][name])
    past = pairs[0][0].shape[2]
    static = {size for k, v in pairs for size in (k.shape[1], k.shape[3], v.shape[3])}
    dynamic = [batch, seq, past, cache_len]
    assert dynamic == [2, 3, 5, 8]
    assert len(set(dynamic)) == 4
    assert not set(dynamic) & ({1} | static)
    assert len(data["dynamic_shapes"][name]) == 2 * data["config"].num_hidden_layers


@pytest.mark.parametrize("name", TINY_ARCHITECTURES + moe_params())
def test_greedy_tokens_vary(name):
    model = get_untrained_model_with_inputs(name)["model"]
    prompt = torch.tensor([[1, 506, 2093, 314, 30]])
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=2
        )
    new_tokens = out[0, prompt.shape[1] :].tolist()
    assert len(new_tokens) == 10
    assert len(set(new_tokens)) >= 5, new_tokens


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_untrained_model_with_inputs("gpt2")
    assert torch.equal(torch.rand(3), expected)


def test_dtype():
    data = get_untrained_model_with_inputs("llama", dtype=torch.float16)
    assert next(data["model"].parameters()).dtype == torch.float16
    key, value = cache_to_list(data["inputs"][cache_argument(data["model"])])[0]
    assert key.dtype == value.dtype == torch.float16


def test_sliding_window_layers_follow_config():
    data = get_untrained_model_with_inputs("gemma2")
    cache = data["inputs"][cache_argument(data["model"])]
    layers = [type(layer).__name__ for layer in cache.layers]
    assert layers == ["DynamicSlidingWindowLayer", "DynamicLayer"]


def test_unknown_name():
    with pytest.raises(ValueError, match=r"Unknown tiny model 'bert'.*gpt2.*llama"):
        get_untrained_model_with_inputs("bert")
    with pytest.raises(ValueError, match="known architectures"):
        get_tiny_config(None)


@pytest.mark.parametrize("dtype", ["float17", torch.int64, 16])
def test_a_dtype_that_is_not_a_floating_one_is_named(dtype):
    with pytest.raises(TypeError, match=r"dtype=.*: give a floating torch.dtype for the weights"):
        get_untrained_model_with_inputs("llama", dtype=dtype)


def test_a_dtype_by_its_name_is_transformers_spelling():
    data = get_untrained_model_with_inputs("llama", dtype="bfloat16")
    assert data["model"].dtype == torch.bfloat16
    assert data["inputs"]["attention_mask"].shape == (2, 8)
