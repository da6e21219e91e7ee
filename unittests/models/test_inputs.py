"""Dummy inputs: shapes, distinct dynamic dimensions, dynamic_shapes structure."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, GPT2Config, LlamaConfig, LlamaForCausalLM

from diag.compat.transformers_api import cache_argument, cache_input
from diag.helpers.cache_helper import cache_to_list
from diag.models import make_dummy_inputs
from diag.models.inputs import decoder_dims


def _smollm2_like_config():
    # the architecture of SmolLM2-135M: 3 kv heads collide with the default seq=3
    return LlamaConfig(
        num_hidden_layers=3,
        hidden_size=576,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=64,
        vocab_size=49152,
    )


def _dims(inputs):
    batch, seq = inputs["input_ids"].shape
    key = cache_to_list(cache_input(inputs))[0][0]
    return batch, seq, key.shape[2], inputs["attention_mask"].shape[1], key.shape


def test_default_tiny_shapes():
    cfg = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=128,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=16,
        vocab_size=1000,
    )
    inputs, ds = make_dummy_inputs(cfg)
    # the cache under the name LlamaForCausalLM.forward takes in the installed release
    cache_name = cache_argument(LlamaForCausalLM)
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids", cache_name]
    batch, seq, past, total, key_shape = _dims(inputs)
    assert (batch, seq, past, total) == (2, 3, 5, 8)
    assert key_shape == (2, 4, 5, 16)
    assert inputs["input_ids"].dtype == torch.int64
    assert int(inputs["input_ids"].max()) < 1000
    assert inputs["attention_mask"].dtype == torch.int64
    assert int(inputs["attention_mask"].min()) == 1
    assert inputs["position_ids"].tolist() == [[5, 6, 7], [5, 6, 7]]
    pairs = cache_to_list(cache_input(inputs))
    assert len(pairs) == 2
    # random, not constant, and keys differ from values
    assert float(pairs[0][0].std()) > 0.5
    assert not torch.equal(pairs[0][0], pairs[0][1])

    assert list(ds) == list(inputs)
    names = {
        key: {axis: getattr(dim, "__name__", str(dim)) for axis, dim in spec.items()}
        for key, spec in ds.items()
        if key != cache_name
    }
    assert names["input_ids"] == {0: "batch", 1: "seq_length"}
    assert names["position_ids"] == {0: "batch", 1: "seq_length"}
    assert names["attention_mask"][0] == "batch"
    assert ds["attention_mask"][1] is torch.export.Dim.DYNAMIC
    cache_ds = cache_input(ds)
    assert len(cache_ds) == 4
    assert all(sorted(d) == [0, 2] for d in cache_ds)
    assert {d[0].__name__ for d in cache_ds} == {"batch"}
    assert {d[2].__name__ for d in cache_ds} == {"past_length"}


def test_dims_distinct_for_smollm2_config():
    cfg = _smollm2_like_config()
    inputs, ds = make_dummy_inputs(cfg)
    batch, seq, past, total, key_shape = _dims(inputs)
    assert key_shape[1] == 3 and key_shape[3] == 64
    values = [batch, seq, past, total]
    assert len(set(values)) == 4
    assert min(values) >= 2
    assert not set(values) & {3, 64}
    assert len(cache_input(ds)) == 6


def test_gpt2_config_and_no_position_ids():
    cfg = GPT2Config(n_layer=3, n_head=4, n_embd=64, vocab_size=500)
    assert decoder_dims(cfg).num_kv_heads == 4 and decoder_dims(cfg).head_dim == 16
    inputs, ds = make_dummy_inputs(cfg, with_position_ids=False)
    assert "position_ids" not in inputs and "position_ids" not in ds
    assert len(cache_to_list(cache_input(inputs))) == 3
    assert cache_to_list(cache_input(inputs))[2][1].shape == (2, 4, 5, 16)


def test_seed_and_explicit_sizes():
    cfg = AutoConfig.for_model(
        "qwen3", num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=300,
    )  # fmt: skip
    a, _ = make_dummy_inputs(cfg, batch=3, seq=4, past=6)
    b, _ = make_dummy_inputs(cfg, batch=3, seq=4, past=6)
    c, _ = make_dummy_inputs(cfg, batch=3, seq=4, past=6, seed=1)
    assert _dims(a)[:4] == (3, 4, 6, 10)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(
        cache_to_list(cache_input(a))[0][0], cache_to_list(cache_input(b))[0][0]
    )
    assert not torch.equal(
        cache_to_list(cache_input(a))[0][0], cache_to_list(cache_input(c))[0][0]
    )
    # the default batch (2) equals the 2 kv heads here: another value is picked
    d, _ = make_dummy_inputs(cfg)
    assert _dims(d)[0] not in (1, 2, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 1}, "batch=1 must be an integer >= 2"),
        ({"batch": 3, "seq": 3}, "batch and seq are both 3"),
        ({"seq": 3, "past": 2, "batch": 5}, "batch and past \\+ seq are both 5"),
        ({"batch": 4}, "num_key_value_heads=4"),
        ({"past": 16}, "head_dim=16"),
    ],
)
def test_colliding_dims_rejected(kwargs, match):
    cfg = LlamaConfig(
        num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
        head_dim=16, vocab_size=100,
    )  # fmt: skip
    with pytest.raises(ValueError, match=match):
        make_dummy_inputs(cfg, **kwargs)


def test_not_a_decoder_config():
    with pytest.raises(ValueError, match="decoder config"):
        make_dummy_inputs(object())
