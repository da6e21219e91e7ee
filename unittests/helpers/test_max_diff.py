from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import LlamaForCausalLM

from diag.compat.transformers_api import output_cache, output_cache_field
from diag.helpers.cache_helper import cache_to_list, make_dynamic_cache
from diag.helpers.max_diff import max_diff


def _cache(n_layers: int = 4, past: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return make_dynamic_cache(
        [
            (torch.randn(1, 2, past, 8, generator=g), torch.randn(1, 2, past, 8, generator=g))
            for _ in range(n_layers)
        ]
    )


def _structure(seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    return {
        "logits": torch.randn(1, 3, 10, generator=g),
        "past_key_values": _cache(seed=seed),
        "extra": [torch.randn(4, generator=g), (np.arange(6, dtype=np.float32).reshape(2, 3), 2.0)],
    }


def test_identical():
    d = max_diff(_structure(), _structure())
    assert d["abs"] == 0.0
    assert d["rel"] == 0.0
    assert d["argm"] is None
    assert d["mismatches"] == []
    # 30 logits + 4 layers * 2 * 80 + 4 + 6 + 1
    assert d["n"] == 30 + 640 + 4 + 6 + 1
    assert d["dnan"] == 0


def test_planted_difference_in_cache():
    expected, got = _structure(), _structure()
    layer = got["past_key_values"].layers[3]
    layer.keys = layer.keys.clone()
    before = float(layer.keys[0, 1, 2, 5])
    layer.keys[0, 1, 2, 5] += 0.75
    d = max_diff(expected, got)
    assert d["argm"] == ("past_key_values.key_cache[3]", (0, 1, 2, 5))
    assert d["abs"] == pytest.approx(0.75, abs=1e-6)
    assert d["rel"] == pytest.approx(0.75 / (abs(before) + 1e-6), rel=1e-5)
    assert d["mismatches"] == []
    # smaller differences elsewhere do not move argm
    got["logits"][0, 2, 1] += 0.5
    d = max_diff(expected, got)
    assert d["argm"] == ("past_key_values.key_cache[3]", (0, 1, 2, 5))


def test_planted_difference_in_list_and_numpy():
    expected, got = _structure(), _structure()
    got["extra"][1][0][1, 2] += 3.0
    d = max_diff(expected, got)
    assert d["argm"] == ("extra[1][0]", (1, 2))
    assert d["abs"] == pytest.approx(3.0)
    assert d["rel"] == pytest.approx(3.0 / (5.0 + 1e-6))

    d = max_diff([1.0, torch.zeros(2, 2)], [1.0, torch.tensor([[0.0, 0.0], [0.0, -2.0]])])
    assert d["argm"] == ("[1]", (1, 1))
    assert d["abs"] == 2.0


def test_shape_mismatch_reported():
    expected, got = _structure(), _structure()
    got["logits"] = got["logits"][:, :2]
    d = max_diff(expected, got)
    assert d["abs"] == math.inf
    assert d["rel"] == math.inf
    assert len(d["mismatches"]) == 1
    assert d["mismatches"][0].startswith("logits: shape (1, 3, 10) expected, got (1, 2, 10)")
    # the rest was still compared
    assert d["n"] == 640 + 4 + 6 + 1
    assert d["abs_compared"] == 0.0


def test_length_mismatch_reported():
    d = max_diff([torch.zeros(2), torch.zeros(2)], [torch.zeros(2)])
    assert d["mismatches"] == ["<root>: length 2 expected, got 1"]
    assert d["abs"] == math.inf
    d = max_diff(_cache(4), _cache(3))
    assert d["mismatches"] == ["<root>: 4 cache layers expected, got 3"]
    d = max_diff({"a": 1, "b": 2}, {"a": 1, "c": 2})
    assert d["mismatches"] == ["<root>: keys differ, missing ['b'], unexpected ['c']"]
    d = max_diff({"a": torch.zeros(1)}, {"a": [torch.zeros(1)]})
    assert d["mismatches"] == ["a: type Tensor expected, got list"]
    d = max_diff({"a": None}, {"a": torch.zeros(1)})
    assert d["mismatches"] == ["a: None expected, got T1s1"]


def test_dtype_and_nan():
    e = torch.tensor([1.0, float("nan"), float("nan"), float("inf"), 2.0])
    g = torch.tensor([1.0, float("nan"), 5.0, float("inf"), 2.5], dtype=torch.float16)
    d = max_diff({"x": e}, {"x": g})
    assert d["dtypes"] == ["x: dtype float32 expected, got float16"]
    assert d["dnan"] == 1
    assert d["abs"] == math.inf  # a NaN appeared on one side only
    assert d["abs_compared"] == 0.5
    assert d["argm"] == ("x", (4,))
    assert d["n"] == 5


def test_torch_against_onnxruntime_flat_outputs(llama_config):
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(2)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    # what an exported model returns: logits, present.0.key, present.0.value, ...
    flat = [out.logits.numpy().copy()]
    for k, v in cache_to_list(output_cache(out)):
        flat.extend([k.numpy().copy(), v.numpy().copy()])
    flat[4][0, 1, 2, 3] -= 0.125  # present.1.value
    ort_flat = [ort.OrtValue.ortvalue_from_numpy(a) for a in flat]
    d = max_diff(out, ort_flat)
    assert d["mismatches"] == []
    assert d["dtypes"] == []
    # named after the output's cache field: "cache" from transformers 5.24 on
    assert d["argm"] == (f"{output_cache_field(out)}.value_cache[1]", (0, 1, 2, 3))
    assert d["abs"] == pytest.approx(0.125, abs=1e-6)
    assert d["n"] == 300 + 4 * 48
    d = max_diff(out, flat[:3])
    assert d["abs"] == math.inf
    assert "5 tensors expected" in d["mismatches"][0]


def test_inputs_unchanged_and_chunks(monkeypatch):
    import importlib

    # the package attribute `diag.helpers.max_diff` is the function, not the module
    module = importlib.import_module("diag.helpers.max_diff")
    monkeypatch.setattr(module, "_CHUNK", 7)  # several chunks per tensor
    e = -torch.arange(60, dtype=torch.float64).reshape(3, 5, 4)
    g = e.clone()
    g[2, 3, 1] += 4.0
    g[0, 0, 1] = float("nan")
    e_copy, g_copy = e.clone(), g.clone()
    d = max_diff(e, g)
    assert d["argm"] == ("", (2, 3, 1))
    assert d["abs_compared"] == 4.0
    assert d["rel_compared"] == pytest.approx(4.0 / (53.0 + 1e-6))
    assert d["dnan"] == 1
    assert d["n"] == 60
    assert torch.equal(e, e_copy)
    assert torch.allclose(g, g_copy, equal_nan=True, rtol=0, atol=0)
