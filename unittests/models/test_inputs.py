"""Dummy inputs: shapes from the model's own cache, distinct dynamic dimensions,
dynamic_shapes structure."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig

from diag.compat.transformers_api import cache_argument, output_cache
from diag.helpers.cache_helper import cache_to_list
from diag.models import make_dummy_inputs
from diag.models.untrained import get_tiny_config, make_untrained_model


def _model(config):
    return make_untrained_model(config)


def _smollm2_like_model():
    # the attention of SmolLM2-135M: 3 kv heads collide with the default seq=3, head 64
    return _model(
        LlamaConfig(
            num_hidden_layers=3,
            hidden_size=576,
            num_attention_heads=9,
            num_key_value_heads=3,
            intermediate_size=64,
            vocab_size=100,
        )
    )


def _dims(inputs, model):
    batch, seq = inputs["input_ids"].shape
    key = cache_to_list(inputs[cache_argument(model)])[0][0]
    return batch, seq, key.shape[2], inputs["attention_mask"].shape[1], key.shape


def test_default_tiny_shapes():
    model = _model(
        LlamaConfig(
            num_hidden_layers=2,
            hidden_size=128,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=16,
            vocab_size=1000,
        )
    )
    name = cache_argument(model)
    inputs, ds = make_dummy_inputs(model)
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids", name]
    batch, seq, past, total, key_shape = _dims(inputs, model)
    assert (batch, seq, past, total) == (2, 3, 5, 8)
    assert key_shape == (2, 4, 5, 16)
    assert inputs["input_ids"].dtype == torch.int64
    assert int(inputs["input_ids"].max()) < 1000
    assert inputs["attention_mask"].dtype == torch.int64
    assert int(inputs["attention_mask"].min()) == 1
    assert inputs["position_ids"].tolist() == [[5, 6, 7], [5, 6, 7]]
    pairs = cache_to_list(inputs[name])
    assert len(pairs) == 2
    # random, not constant, and keys differ from values
    assert float(pairs[0][0].std()) > 0.5
    assert not torch.equal(pairs[0][0], pairs[0][1])

    assert list(ds) == list(inputs)
    names = {
        key: {axis: getattr(dim, "__name__", str(dim)) for axis, dim in spec.items()}
        for key, spec in ds.items()
        if key != name
    }
    assert names["input_ids"] == {0: "batch", 1: "seq_length"}
    assert names["position_ids"] == {0: "batch", 1: "seq_length"}
    assert names["attention_mask"][0] == "batch"
    assert ds["attention_mask"][1] is torch.export.Dim.DYNAMIC
    cache_ds = ds[name]
    assert len(cache_ds) == 4
    assert all(sorted(d) == [0, 2] for d in cache_ds)
    assert {d[0].__name__ for d in cache_ds} == {"batch"}
    assert {d[2].__name__ for d in cache_ds} == {"past_length"}


def test_dims_distinct_for_smollm2_attention():
    model = _smollm2_like_model()
    inputs, ds = make_dummy_inputs(model)
    batch, seq, past, total, key_shape = _dims(inputs, model)
    assert key_shape[1] == 3 and key_shape[3] == 64
    values = [batch, seq, past, total]
    assert len(set(values)) == 4
    assert min(values) >= 2
    assert not set(values) & {3, 64}
    assert len(ds[cache_argument(model)]) == 6


def test_gpt2_and_no_position_ids():
    model = _model(GPT2Config(n_layer=3, n_head=4, n_embd=64, vocab_size=500))
    inputs, ds = make_dummy_inputs(model, with_position_ids=False)
    assert "position_ids" not in inputs and "position_ids" not in ds
    pairs = cache_to_list(inputs[cache_argument(model)])
    assert len(pairs) == 3
    assert pairs[2][1].shape == (2, 4, 5, 16)


@pytest.mark.parametrize(
    ("name", "kv_heads", "head_dim"),
    [
        # multi-query: one head, whereas config.num_kv_heads says 8
        ("falcon", 1, 16),
        # latent attention: keys of kv_lora_rank=32, whereas config.head_dim says 16
        ("deepseek_v3", None, 32),
    ],
)
def test_cache_shapes_come_from_the_model_not_the_config(name, kv_heads, head_dim):
    model = make_untrained_model(get_tiny_config(name))
    inputs, ds = make_dummy_inputs(model)
    # the model's own cache after a forward of 3 tokens
    with torch.no_grad():
        real = cache_to_list(output_cache(model(torch.tensor([[5, 6, 7]]), use_cache=True)))
    built = cache_to_list(inputs[cache_argument(model)])
    assert len(built) == len(real) == 2
    for (k, v), (rk, rv) in zip(built, real, strict=True):
        assert (k.shape[1], k.shape[3], v.shape[3]) == (rk.shape[1], rk.shape[3], rv.shape[3])
        assert k.shape[3] == head_dim
        if kv_heads is not None:
            assert k.shape[1] == kv_heads
    # and the model runs on them (a wrong head count fails in the attention's concat)
    with torch.no_grad():
        out = model(**copy.deepcopy(inputs))
    assert output_cache(out).get_seq_length() == 8


def test_a_stray_kv_head_attribute_is_ignored():
    # gpt2 never reads num_key_value_heads: its cache keeps its 4 heads
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=300)
    config.num_key_value_heads = 2
    model = _model(config)
    inputs, _ = make_dummy_inputs(model)
    assert cache_to_list(inputs[cache_argument(model)])[0][0].shape[1] == 4
    with torch.no_grad():
        out = model(**copy.deepcopy(inputs))
    assert out.logits.shape == (2, 3, 300)


def test_seed_dtype_and_explicit_sizes():
    cfg = AutoConfig.for_model(
        "qwen3", num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=300,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(cfg)
    name = cache_argument(model)
    a, _ = make_dummy_inputs(model, batch=3, seq=4, past=6)
    b, _ = make_dummy_inputs(model, batch=3, seq=4, past=6)
    c, _ = make_dummy_inputs(model, batch=3, seq=4, past=6, seed=1)
    assert _dims(a, model)[:4] == (3, 4, 6, 10)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(cache_to_list(a[name])[0][0], cache_to_list(b[name])[0][0])
    assert not torch.equal(cache_to_list(a[name])[0][0], cache_to_list(c[name])[0][0])
    # the default batch (2) equals the 2 kv heads here: another value is picked
    d, _ = make_dummy_inputs(model)
    assert _dims(d, model)[0] not in (1, 2, 16)
    # the dtype follows the model's cache unless given; the same seed, the same values
    assert cache_to_list(d[name])[0][0].dtype == torch.float32
    half, _ = make_dummy_inputs(model, dtype=torch.float16)
    torch.testing.assert_close(
        cache_to_list(half[name])[0][0], cache_to_list(d[name])[0][0].half()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 1}, "batch=1 must be an integer >= 2"),
        ({"batch": 3, "seq": 3}, "batch and seq are both 3"),
        ({"seq": 3, "past": 2, "batch": 5}, "batch and past \\+ seq are both 5"),
        ({"batch": 4}, "batch=4 equals the cache's kv_heads of layer 0"),
        ({"past": 16}, "past=16 equals the cache's head_dim of layer 0"),
    ],
)
def test_colliding_dims_rejected(kwargs, match):
    model = _model(
        LlamaConfig(
            num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
            head_dim=16, vocab_size=100,
        )
    )  # fmt: skip
    with pytest.raises(ValueError, match=match):
        make_dummy_inputs(model, **kwargs)


def test_a_config_is_refused_with_what_to_pass():
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50)
    with pytest.raises(TypeError, match="Pass `model`, not `model.config`"):
        make_dummy_inputs(config)
