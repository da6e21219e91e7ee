"""Lengths the decoding loop grows, found fixed in a graph: refused before running."""

from __future__ import annotations

import dataclasses

import onnx
import onnxruntime as ort
import pytest
import torch

from diag.contract import DIAG_LAYOUT, STATIC_LAYOUT, ContractError, read_contract
from diag.contract.fixed_dims import fixed_length_problems, fixed_size, how_to_export
from diag.contract.names import CacheNames
from diag.generation import onnx_generate

PAST = [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]


def _fix(model: onnx.ModelProto, name_prefix: str, axis: int, size: int) -> onnx.ModelProto:
    """``model`` with dim ``axis`` of the inputs named ``name_prefix...`` fixed at ``size``."""
    for v in model.graph.input:
        if v.name.startswith(name_prefix):
            v.type.tensor_type.shape.dim[axis].dim_value = size
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.pinned  # reads a dimension, no transformers model
def test_fixed_size():
    # some exporters write a static size as a string of digits
    dims = (7, "7", 0, "past_length", "s54 + 1", None)
    assert [fixed_size(d) for d in dims] == [7, 7, 0, None, None, None]


@pytest.mark.pinned  # ONNX logic over a hand-written graph, no transformers model
def test_fixed_cache_length_is_refused_before_running(bigram_lm):
    model = _fix(bigram_lm()[0], "past_key_values", 2, 7)
    with pytest.raises(ContractError) as info:
        read_contract(_session(model))
    lines = [line for line in str(info.value).splitlines() if line.startswith("  - ")]
    # one line for the 4 cache inputs, naming the dimension, its size and the fix
    assert lines == [
        "  - input 'past_key_values.0.key' ... 'past_key_values.1.value' (4 tensors) has its "
        "cache length (dim 2 of [batch, 2, 7, 4]) fixed at 7: a step takes exactly 7 cached "
        "positions, but the cache starts empty or at the prompt and grows at each step; "
        + how_to_export(DIAG_LAYOUT)
    ]
    # onnx_generate says it, not ONNX Runtime's "Got invalid dimensions"
    with pytest.raises(ContractError, match="fixed at 7"):
        onnx_generate(model, torch.tensor([[1, 2, 3, 4, 5, 6, 7]]), max_new_tokens=2)


@pytest.mark.pinned  # ONNX logic over a hand-written graph, no transformers model
def test_fixed_step_and_mask_lengths_are_refused(bigram_lm):
    model = _fix(_fix(bigram_lm()[0], "input_ids", 1, 5), "attention_mask", 1, 5)
    with pytest.raises(ContractError) as info:
        read_contract(_session(model))
    message = str(info.value)
    assert (
        "input 'input_ids' has its step length (dim 1 of [batch, 5]) fixed at 5: the same "
        "graph takes the whole prompt, then one token per step" in message
    )
    assert "input 'attention_mask' has its length (dim 1 of [batch, 5]) fixed at 5" in message
    assert "diag.export_causal_lm" in message


@pytest.mark.pinned  # shapes in, problems out, no transformers model
def test_what_may_be_fixed():
    # the batch, and the heads and head size, may be fixed: no problem
    shapes = {"input_ids": [2, "seq"], "attention_mask": [2, "total"]}
    shapes.update({name: [2, 4, "past", 16] for name in PAST})
    assert fixed_length_problems(shapes, DIAG_LAYOUT, PAST) == []
    # a static cache is buffers of max_length positions, and so is its mask
    static = dict(shapes, attention_mask=[2, 64], **{name: [2, 4, 64, 16] for name in PAST})
    assert fixed_length_problems(static, STATIC_LAYOUT, PAST) == []
    # a decode graph after a prefill graph takes one token per step
    pair = dataclasses.replace(
        DIAG_LAYOUT, name="transformers", prefill_present=CacheNames("c.{layer}.{kind}")
    )
    assert fixed_length_problems(dict(shapes, input_ids=[2, 1]), pair, PAST) == []
    # but not two, nor a fixed cache however the layout is
    problems = fixed_length_problems(
        dict(shapes, input_ids=[2, 2], **{name: [2, 4, 9, 16] for name in PAST}), pair, PAST
    )
    assert [name for _, name in problems] == ["input_ids", *PAST]
    # in the words of the tool that wrote it
    assert all(
        template.endswith("OnnxConfig(dynamic=True) (or dynamic_shapes= naming these dimensions)")
        for template, _ in problems
    )


@pytest.mark.slow  # one more export through transformers' exporter
def test_transformers_export_without_dynamic_shapes_is_refused(tiny_llama_folder):
    # transformers' exporter's default OnnxConfig() fixes the decode graph's cache at the
    # sample's length: ONNX Runtime would stop at the second decode step
    pytest.importorskip("transformers.exporters", reason="transformers.exporters exists from 5.23")
    from unittests.conftest import transformers_folder

    _, hf = tiny_llama_folder
    folder = transformers_folder(hf, dynamic=False, optimize=False)
    ids = torch.tensor([[1, 5, 7, 9], [2, 1, 4, 6]])
    with pytest.raises(ContractError) as info:
        onnx_generate(str(folder), ids, max_new_tokens=4)
    message = str(info.value)
    assert "'input.cache.layers.0.keys' ... 'input.cache.layers.1.values' (4 tensors)" in message
    assert "fixed at 4" in message and "OnnxConfig(dynamic=True)" in message
