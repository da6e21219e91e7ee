from __future__ import annotations

import pytest
import torch
from transformers import (
    DynamicCache,
    EncoderDecoderCache,
    Gemma2ForCausalLM,
    LlamaForCausalLM,
    StaticCache,
)

from diag.compat.transformers_api import cache_argument, output_cache
from diag.helpers.cache_helper import (
    cache_leaves,
    cache_parts,
    cache_to_list,
    is_cache,
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_static_cache,
    map_cache_tensors,
)


def _pairs(n_layers: int, past: int, batch: int = 1, heads: int = 2, dim: int = 8):
    torch.manual_seed(0)
    return [
        (torch.randn(batch, heads, past, dim), torch.randn(batch, heads, past, dim))
        for _ in range(n_layers)
    ]


def test_round_trip():
    pairs = _pairs(3, 5)
    cache = make_dynamic_cache(pairs)
    assert isinstance(cache, DynamicCache)
    assert cache.get_seq_length() == 5
    back = cache_to_list(cache)
    assert len(back) == 3
    for (k, v), (k2, v2) in zip(pairs, back, strict=True):
        assert torch.equal(k, k2)
        assert torch.equal(v, v2)


def test_empty_past():
    cache = make_dynamic_cache(_pairs(2, 0))
    assert cache.get_seq_length() == 0
    assert [tuple(k.shape) for k, _ in cache_to_list(cache)] == [(1, 2, 0, 8), (1, 2, 0, 8)]


def test_no_layers():
    cache = make_dynamic_cache([])
    assert isinstance(cache, DynamicCache)
    assert cache_to_list(cache) == []


def test_bad_inputs(llama_config):
    with pytest.raises(TypeError, match="pair"):
        make_dynamic_cache([torch.zeros(1, 2, 3, 4)])
    with pytest.raises(ValueError, match="batch, kv_heads, past, head_dim"):
        make_dynamic_cache([(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))])
    with pytest.raises(ValueError, match="disagree"):
        make_dynamic_cache([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 5, 4))])
    with pytest.raises(ValueError, match="describes 2 cache layers but 3"):
        make_dynamic_cache(_pairs(3, 2), config=llama_config(2))
    with pytest.raises(TypeError, match="cache_to_list"):
        make_dynamic_cache(make_dynamic_cache(_pairs(1, 2)))
    with pytest.raises(TypeError, match="layers"):
        cache_to_list([1, 2])


def test_is_cache():
    assert is_cache(make_dynamic_cache(_pairs(1, 2)))
    assert is_cache(make_encoder_decoder_cache(_pairs(1, 2), _pairs(1, 3)))
    assert not is_cache(_pairs(1, 2))
    assert not is_cache(None)


@pytest.mark.parametrize("past", [0, 5])
def test_llama_accepts_cache(past, llama_config):
    config = llama_config(2)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval()
    cache = make_dynamic_cache(_pairs(2, past), config=config)
    seq = 3
    input_ids = torch.randint(0, config.vocab_size, (1, seq))
    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            attention_mask=torch.ones(1, past + seq, dtype=torch.int64),
            **{cache_argument(model): cache},
            use_cache=True,
        )
    assert out.logits.shape == (1, seq, config.vocab_size)
    assert isinstance(output_cache(out), DynamicCache)
    assert output_cache(out).get_seq_length() == past + seq
    pairs = cache_to_list(output_cache(out))
    assert [tuple(k.shape) for k, _ in pairs] == [(1, 2, past + seq, 8)] * 2

    # the cache given is the same as the one the model builds itself from the prefix
    if past == 0:
        with torch.no_grad():
            ref = model(input_ids=input_ids, use_cache=True)
        for (k, v), (rk, rv) in zip(pairs, cache_to_list(output_cache(ref)), strict=True):
            torch.testing.assert_close(k, rk)
            torch.testing.assert_close(v, rv)


def test_sliding_window_config(sliding_config):
    config = sliding_config
    torch.manual_seed(2)
    model = Gemma2ForCausalLM(config).eval()
    name = cache_argument(model)
    prefix = torch.randint(0, 100, (1, 6))
    nxt = torch.randint(0, 100, (1, 2))
    with torch.no_grad():
        full = model(input_ids=torch.cat([prefix, nxt], dim=1)).logits[:, -2:]
        ref_cache = output_cache(model(input_ids=prefix, use_cache=True))
        # a cache without config keeps every position of every layer
        full_pairs = cache_to_list(
            output_cache(model(input_ids=prefix, **{name: DynamicCache()}, use_cache=True))
        )
    assert [k.shape[2] for k, _ in full_pairs] == [6, 6]
    cache = make_dynamic_cache(full_pairs, config=config)
    assert [type(layer).__name__ for layer in cache.layers] == [
        type(layer).__name__ for layer in ref_cache.layers
    ]
    assert [type(layer).__name__ for layer in cache.layers] == [
        "DynamicSlidingWindowLayer",
        "DynamicLayer",
    ]
    assert cache.layers[0].keys.shape[2] == 3  # sliding_window - 1
    assert cache.layers[1].keys.shape[2] == 6
    assert cache.get_seq_length() == 6
    for layer, ref_layer in zip(cache.layers, ref_cache.layers, strict=True):
        assert torch.equal(layer.keys, ref_layer.keys)
    with torch.no_grad():
        out = model(
            input_ids=nxt,
            attention_mask=torch.ones(1, 8, dtype=torch.int64),
            **{name: cache},
        )
    # one step over the cache against the full sequence: other product shapes, a tiny
    # model's float32 rounding (~1e-6), not bit for bit
    torch.testing.assert_close(out.logits, full, atol=1e-5, rtol=1e-5)


def test_static_cache(llama_config):
    config = llama_config(2)
    pairs = _pairs(2, 3)
    cache = make_static_cache(pairs, config, max_cache_len=10)
    assert isinstance(cache, StaticCache)
    assert int(cache.get_seq_length()) == 3
    back = cache_to_list(cache)
    assert back[0][0].shape == (1, 2, 10, 8)
    assert torch.equal(back[1][1][:, :, :3], pairs[1][1])
    assert float(back[1][1][:, :, 3:].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="max_cache_len"):
        make_static_cache(_pairs(2, 11), config, max_cache_len=10)


def test_cache_parts_and_leaves():
    pairs = _pairs(2, 4)
    cache = make_dynamic_cache(pairs)
    parts = cache_parts(cache)
    assert list(parts) == ["key_cache", "value_cache"]
    assert torch.equal(parts["value_cache"][1], pairs[1][1])
    leaves = cache_leaves(cache, "past_key_values")
    assert [p for p, _ in leaves] == [
        "past_key_values.key_cache[0]",
        "past_key_values.value_cache[0]",
        "past_key_values.key_cache[1]",
        "past_key_values.value_cache[1]",
    ]
    assert torch.equal(leaves[2][1], pairs[1][0])

    ed = make_encoder_decoder_cache(_pairs(1, 2), _pairs(1, 7))
    assert isinstance(ed, EncoderDecoderCache)
    assert list(cache_parts(ed)) == ["self_attention_cache", "cross_attention_cache"]
    assert [p for p, _ in cache_leaves(ed)] == [
        "self_attention_cache.key_cache[0]",
        "self_attention_cache.value_cache[0]",
        "cross_attention_cache.key_cache[0]",
        "cross_attention_cache.value_cache[0]",
    ]
    assert cache_to_list(ed)[0][0].shape[2] == 2


def test_map_cache_tensors_keeps_class_and_original(sliding_config):
    cache = make_dynamic_cache(_pairs(2, 6), config=sliding_config)
    half = map_cache_tensors(cache, lambda t, name: t.half() if t.is_floating_point() else t)
    assert type(half) is DynamicCache
    assert [type(la).__name__ for la in half.layers] == [type(la).__name__ for la in cache.layers]
    assert [la.keys.dtype for la in half.layers] == [torch.float16, torch.float16]
    assert [la.keys.dtype for la in cache.layers] == [torch.float32, torch.float32]
    assert half.layers[0].cumulative_length == 6
    assert half.layers[0].sliding_window == 4
    if "_sliding_window_tensor" in vars(cache.layers[0]):  # 5.x layers only
        assert half.layers[0]._sliding_window_tensor.dtype == torch.int64
    assert half.get_seq_length() == 6
