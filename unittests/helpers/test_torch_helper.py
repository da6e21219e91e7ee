from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from diag.compat.transformers_api import output_cache, output_cache_field
from diag.helpers.cache_helper import cache_to_list, make_dynamic_cache
from diag.helpers.torch_helper import get_weight_type, to_any


def _inputs():
    k = torch.randn(1, 2, 4, 8)
    return {
        "input_ids": torch.tensor([[1, 2, 3]]),
        "attention_mask": torch.ones((1, 7), dtype=torch.int64),
        "past_key_values": make_dynamic_cache([(k, k.clone()), (k.clone(), k.clone())]),
        "extra": [torch.zeros(2), (torch.tensor([True]), 3, None)],
    }


def test_to_any_float16_keeps_integers():
    inputs = _inputs()
    out = to_any(inputs, torch.float16)
    assert out["input_ids"].dtype == torch.int64
    assert out["attention_mask"].dtype == torch.int64
    assert torch.equal(out["input_ids"], inputs["input_ids"])
    assert type(out["past_key_values"]) is DynamicCache
    pairs = cache_to_list(out["past_key_values"])
    assert [(k.dtype, v.dtype) for k, v in pairs] == [(torch.float16, torch.float16)] * 2
    # a cast rounds to nearest on every CPU: exactly the float16 of each value
    assert torch.equal(pairs[1][0], cache_to_list(inputs["past_key_values"])[1][0].half())
    assert out["past_key_values"].get_seq_length() == 4
    assert out["extra"][0].dtype == torch.float16
    assert out["extra"][1][0].dtype == torch.bool
    assert out["extra"][1][1:] == (3, None)
    assert isinstance(out["extra"][1], tuple)
    # the original is untouched
    assert cache_to_list(inputs["past_key_values"])[0][0].dtype == torch.float32
    assert inputs["extra"][0].dtype == torch.float32


def test_to_any_by_name_and_device():
    out = to_any(_inputs(), "bfloat16")
    assert cache_to_list(out["past_key_values"])[0][0].dtype == torch.bfloat16
    out = to_any(_inputs(), "cpu")
    assert out["input_ids"].device.type == "cpu"
    assert cache_to_list(out["past_key_values"])[0][0].dtype == torch.float32
    with pytest.raises(ValueError, match="neither a torch dtype"):
        to_any(_inputs(), "float17")
    with pytest.raises(ValueError, match="floating"):
        to_any(_inputs(), torch.int32)
    with pytest.raises(TypeError, match="torch.dtype"):
        to_any(_inputs(), 16)


def test_to_any_sliding_cache_and_model_output(sliding_config):
    k = torch.randn(1, 2, 6, 8)
    cache = make_dynamic_cache([(k, k), (k, k)], config=sliding_config)
    field = output_cache_field(CausalLMOutputWithPast)
    output = CausalLMOutputWithPast(logits=torch.zeros(1, 2, 5), **{field: cache})
    out = to_any(output, torch.float16)
    assert type(out) is CausalLMOutputWithPast
    assert out.logits.dtype == torch.float16
    assert out.loss is None
    assert [type(la).__name__ for la in output_cache(out).layers] == [
        "DynamicSlidingWindowLayer",
        "DynamicLayer",
    ]
    assert output_cache(out).get_seq_length() == 6
    assert output_cache(out).layers[0].keys.shape == (1, 2, 3, 8)


def test_to_any_numpy():
    out = to_any({"a": np.zeros(2, dtype=np.float32), "b": np.zeros(2, dtype=np.int64)}, "float16")
    assert out["a"].dtype == np.float16
    assert out["b"].dtype == np.int64
    # numpy has no bfloat16 of its own: the array stays as it is
    out = to_any({"a": np.zeros(2, dtype=np.float32)}, "bfloat16")
    assert out["a"].dtype == np.float32


def test_get_weight_type(llama_config):
    model = LlamaForCausalLM(llama_config(1))
    assert get_weight_type(model) == torch.float32
    model = model.to(torch.bfloat16)
    # norms kept in float32 do not outvote the bfloat16 matrices
    model.model.norm.float()
    assert get_weight_type(model) == torch.bfloat16
    with pytest.raises(ValueError, match="no floating parameters"):
        get_weight_type(torch.nn.ReLU())
    with pytest.raises(TypeError, match="nn.Module"):
        get_weight_type({"a": 1})
