"""cache_layout: the cache's layers, heads and head sizes read from the model's own
forward, on models whose config attributes say otherwise."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config

from diag.compat.transformers_api import output_cache
from diag.helpers.cache_helper import cache_to_list
from diag.models.cache_layout import UnsupportedCacheError, cache_layout
from diag.models.untrained import get_tiny_config, make_untrained_model


def _real_shapes(model, batch=2, length=4):
    """(heads, key size, value size, layer class) of each layer of the cache a forward
    of ``batch`` x ``length`` tokens returns: the truth cache_layout must report."""
    ids = torch.arange(batch * length).reshape(batch, length) + 3
    with torch.no_grad():
        cache = output_cache(model(ids, use_cache=True))
    layers = cache.layers
    return [
        (k.shape[1], k.shape[3], v.shape[3], type(layer).__name__)
        for (k, v), layer in zip(cache_to_list(cache), layers, strict=True)
    ]


def _layout_shapes(layout):
    return [(x.kv_heads, x.head_dim, x.value_head_dim, x.kind) for x in layout.layers]


def test_multi_query_falcon_has_one_head_whatever_its_config_says():
    model = make_untrained_model(get_tiny_config("falcon"))
    assert model.config.num_attention_heads == 8 and model.config.num_kv_heads == 8
    layout = cache_layout(model)
    assert _layout_shapes(layout) == _real_shapes(model)
    assert [layer.kv_heads for layer in layout.layers] == [1, 1]
    assert layout.num_layers == 2 and layout.vocab_size == 49152
    assert layout.dtype == torch.float32


def test_latent_attention_keys_are_not_the_config_head_dim():
    model = make_untrained_model(get_tiny_config("deepseek_v3"))
    config = model.config
    layout = cache_layout(model)
    assert _layout_shapes(layout) == _real_shapes(model)
    # keys hold kv_lora_rank (5.x: the compressed latent) or qk_nope + qk_rope
    # (4.57) = 32 values, the values 16; the config's head_dim (its rope size) is 16
    assert config.head_dim == 16
    assert {(layer.head_dim, layer.value_head_dim) for layer in layout.layers} == {(32, 16)}


def test_no_kv_head_attribute_gives_every_head():
    model = make_untrained_model(get_tiny_config("gpt_neox"))
    assert getattr(model.config, "num_key_value_heads", None) is None
    layout = cache_layout(model)
    assert _layout_shapes(layout) == _real_shapes(model)
    assert [layer.kv_heads for layer in layout.layers] == [4, 4]


def test_sliding_layers_dtype_and_mode():
    model = make_untrained_model(get_tiny_config("gemma2"), dtype=torch.float16).train()
    layout = cache_layout(model)
    assert [layer.kind for layer in layout.layers] == [
        "DynamicSlidingWindowLayer",
        "DynamicLayer",
    ]
    assert layout.dtype == torch.float16
    assert model.training  # left in the mode it was in
    assert layout.static_dims() == {4: "kv_heads of layer 0", 16: "head_dim of layer 0"}


def test_random_pairs_follow_the_layout():
    layout = cache_layout(make_untrained_model(get_tiny_config("deepseek_v3")))
    pairs = layout.random_pairs(3, 7, generator=torch.Generator().manual_seed(0))
    assert [(tuple(k.shape), tuple(v.shape)) for k, v in pairs] == [
        (layer.key_shape(3, 7), layer.value_shape(3, 7)) for layer in layout.layers
    ]
    assert all(k.shape[3] == 32 and v.shape[3] == 16 for k, v in pairs)
    empty = layout.random_pairs(2, 0)
    assert all(k.shape[2] == 0 and v.shape[2] == 0 for k, v in empty)


def test_a_stray_config_attribute_does_not_matter():
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=300)
    config.num_key_value_heads = 1
    config.head_dim = 8
    model = make_untrained_model(config)
    assert _layout_shapes(cache_layout(model)) == [(4, 16, 16, "DynamicLayer")] * 2


def test_a_cache_of_convolution_layers_is_refused():
    # lfm2 mixes convolution and attention layers: a LinearAttentionLayer from
    # transformers 5, its own Lfm2HybridConvCache (no layers) in 4.57
    config = AutoConfig.for_model(
        "lfm2", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, vocab_size=100,
        layer_types=["conv", "full_attention"], pad_token_id=0,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(UnsupportedCacheError, match="Lfm2ForCausalLM.*key/value layers"):
        cache_layout(model)
