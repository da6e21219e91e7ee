from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np
import onnxruntime as ort
import torch
from transformers import LlamaForCausalLM

from diag.compat.transformers_api import output_cache_field
from diag.helpers.cache_helper import (
    make_dynamic_cache,
    make_encoder_decoder_cache,
    make_static_cache,
)
from diag.helpers.string_type import string_type


def test_int64_tensor():
    t = torch.arange(123, dtype=torch.int64).reshape(1, 123) + 7
    assert string_type(t) == "T7r2"
    assert string_type(t, with_shape=True) == "T7s1x123"
    # min 7, max 129, mean 68
    assert string_type(t, with_shape=True, with_min_max=True) == "T7s1x123[7,129:A68]"
    assert string_type(t, with_min_max=True) == "T7r2[7,129:A68]"


def test_issue_example_mean_format():
    # sum 253472 over 25 values: mean 10138.88, printed with 7 significant digits
    t = torch.tensor([[7, 50285] + [8833] * 22 + [8854]], dtype=torch.int64)
    assert string_type(t, with_shape=True, with_min_max=True) == "T7s1x25[7,50285:A10138.88]"


def test_float_dtypes_and_stats():
    assert string_type(torch.zeros(2, 3), with_shape=True) == "T1s2x3"
    assert string_type(torch.zeros(2, dtype=torch.float16), with_shape=True) == "T10s2"
    assert string_type(torch.zeros(2, dtype=torch.bfloat16), with_shape=True) == "T16s2"
    assert string_type(torch.zeros(2, dtype=torch.float64), with_shape=True) == "T11s2"
    assert string_type(torch.zeros(2, dtype=torch.int32), with_shape=True) == "T6s2"
    t = torch.tensor([[0.25, -1.5], [3.0, 1.0 / 3.0]])
    assert string_type(t, True, True) == "T1s2x2[-1.5,3:A0.5208333]"
    assert string_type(torch.tensor(2.5), True, True) == "T1s[2.5,2.5:A2.5]"
    assert string_type(torch.tensor([True, False, True]), True, True) == "T9s3[0,1:A0.6666667]"


def test_empty_and_nan():
    assert string_type(torch.zeros(0, 4), True, True) == "T1s0x4[empty]"
    t = torch.tensor([0.5, float("nan"), 2.0, float("nan")])
    assert string_type(t, True, True) == "T1s4[0.5,2:A1.25:N2nan]"
    assert string_type(torch.full((4,), float("nan")), True, True) == "T1s4[nan,nan:Anan:N4nan]"
    assert string_type(torch.tensor([1.0, float("inf")]), True, True) == "T1s2[1,inf:Ainf]"


def test_numpy_and_ortvalue():
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32) / 4
    assert string_type(a) == "A1r2"
    assert string_type(a, with_shape=True) == "A1s2x3"
    assert string_type(a, True, True) == "A1s2x3[0.25,1.5:A0.875]"
    assert string_type(np.arange(5, dtype=np.int64), True, True) == "A7s5[0,4:A2]"
    v = ort.OrtValue.ortvalue_from_numpy(a)
    assert string_type(v) == "OT1r2"
    assert string_type(v, True, True) == "OT1s2x3[0.25,1.5:A0.875]"
    h = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, 8), dtype=np.float16))
    assert string_type(h, with_shape=True) == "OT10s1x8"


def test_scalars_and_misc():
    assert string_type(None) == "None"
    assert string_type(5) == "int"
    assert string_type(5, with_min_max=True) == "int=5"
    assert string_type(0.5, with_min_max=True) == "float=0.5"
    assert string_type(True, with_min_max=True) == "bool=True"
    assert string_type(True) == "bool"
    assert string_type("abc") == "str"
    assert string_type(torch.float16) == "torch.float16"
    assert string_type(torch.device("cpu")) == "device(cpu)"
    assert string_type(torch.Size([1, 3])) == "Size(1,3)"
    assert string_type(object()) == "object"


def test_containers():
    inputs = {
        "input_ids": torch.zeros((1, 3), dtype=torch.int64),
        "attention_mask": torch.ones((1, 8), dtype=torch.int64),
    }
    assert string_type(inputs, with_shape=True) == "dict(input_ids:T7s1x3,attention_mask:T7s1x8)"
    assert string_type(inputs) == "dict(input_ids:T7r2,attention_mask:T7r2)"
    assert string_type([], with_shape=True) == "#0[]"
    assert string_type([torch.zeros(2), torch.zeros(3)], with_shape=True) == "#2[T1s2,T1s3]"
    assert string_type((torch.zeros(2),), with_shape=True) == "(T1s2,)"
    assert (
        string_type((torch.zeros(2), torch.zeros(2, dtype=torch.int64)), with_shape=True)
        == "(T1s2,T7s2)"
    )
    Pair = namedtuple("Pair", ["a", "b"])
    assert string_type(Pair(1, None)) == "Pair(int,None)"
    assert string_type(OrderedDict(x=1.0), with_min_max=True) == "OrderedDict(x:float=1)"


def test_nested():
    obj = {"a": [torch.zeros(1, dtype=torch.int64), (2, {"b": None})], "c": np.zeros(3)}
    assert string_type(obj, with_shape=True) == "dict(a:#2[T7s1,(int,dict(b:None))],c:A11s3)"
    assert (
        string_type(obj, with_shape=True, with_min_max=True)
        == "dict(a:#2[T7s1[0,0:A0],(int=2,dict(b:None))],c:A11s3[0,0:A0])"
    )


def test_dynamic_cache():
    k = torch.zeros(1, 3, 21, 64)
    cache = make_dynamic_cache([(k, k), (k, k)])
    assert (
        string_type(cache, with_shape=True)
        == "DynamicCache(key_cache=#2[T1s1x3x21x64,T1s1x3x21x64], "
        "value_cache=#2[T1s1x3x21x64,T1s1x3x21x64])"
    )
    assert string_type(cache) == "DynamicCache(key_cache=#2[T1r4,T1r4], value_cache=#2[T1r4,T1r4])"
    kv = [(torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 2.0))]
    assert (
        string_type(make_dynamic_cache(kv), with_shape=True, with_min_max=True)
        == "DynamicCache(key_cache=#1[T1s1x1x2x2[1,1:A1]], value_cache=#1[T1s1x1x2x2[2,2:A2]])"
    )
    empty = torch.zeros(1, 2, 0, 4, dtype=torch.float16)
    assert (
        string_type(make_dynamic_cache([(empty, empty)]), True, True)
        == "DynamicCache(key_cache=#1[T10s1x2x0x4[empty]], value_cache=#1[T10s1x2x0x4[empty]])"
    )


def test_other_caches(llama_config):
    config = llama_config(1)
    k = torch.zeros(1, 2, 3, 8)
    assert (
        string_type(make_static_cache([(k, k)], config, max_cache_len=5), with_shape=True)
        == "StaticCache(key_cache=#1[T1s1x2x5x8], value_cache=#1[T1s1x2x5x8])"
    )
    ed = make_encoder_decoder_cache([(k, k)], [(k[:, :, :1], k[:, :, :1])])
    assert string_type(ed, with_shape=True) == (
        "EncoderDecoderCache(self_attention_cache=DynamicCache(key_cache=#1[T1s1x2x3x8], "
        "value_cache=#1[T1s1x2x3x8]), cross_attention_cache=DynamicCache("
        "key_cache=#1[T1s1x2x1x8], value_cache=#1[T1s1x2x1x8]))"
    )


def test_model_output(llama_config):
    model = LlamaForCausalLM(llama_config(2)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 3), dtype=torch.int64), use_cache=True)
    # the cache field is "cache" from transformers 5.24 on, "past_key_values" before
    assert string_type(out, with_shape=True) == (
        f"CausalLMOutputWithPast(logits:T1s1x3x100,{output_cache_field(out)}:DynamicCache("
        "key_cache=#2[T1s1x2x3x8,T1s1x2x3x8], value_cache=#2[T1s1x2x3x8,T1s1x2x3x8]))"
    )
    assert string_type(model) == "LlamaForCausalLM"
