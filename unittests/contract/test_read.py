"""A session read against diag's layout: what is read, what is refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from diag.contract import DIAG_LAYOUT, ContractError, read_contract
from diag.generation import onnx_generate


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_read_contract(bigram_lm):
    model, _ = bigram_lm(num_layers=3, vocab=11, heads=2, head_dim=4)
    info = read_contract(_session(model))
    assert info.layout is DIAG_LAYOUT
    assert info.num_layers == 3
    assert info.has_position_ids
    assert info.past_names[:3] == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
    ]
    assert info.output_names == ["logits"] + [
        f"present.{i}.{k}" for i in range(3) for k in ("key", "value")
    ]
    assert info.past_shapes == [(2, 4)] * 6
    assert info.past_elem_types == [TensorProto.FLOAT] * 6
    assert info.vocab_size == 11
    assert {k: v.name for k, v in info.int_types.items()} == {
        "input_ids": "int64",
        "attention_mask": "int64",
        "position_ids": "int64",
    }


def test_int32_ids_are_read(bigram_lm):
    model, _ = bigram_lm(ids_type=TensorProto.INT32)
    assert read_contract(_session(model)).int_types["input_ids"] == np.int32


def test_without_position_ids(bigram_lm):
    model, _ = bigram_lm(with_position_ids=False)
    info = read_contract(_session(model))
    assert not info.has_position_ids
    assert info.num_layers == 2


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (
            {"rename": {"past_key_values.1.key": "past.1.key"}},
            ["unexpected input 'past.1.key'", "missing input 'past_key_values.1.key'"],
        ),
        ({"rename": {"present.0.value": "kv_out"}}, ["unexpected output 'kv_out'"]),
        ({"rename": {"input_ids": "tokens"}}, ["missing input 'input_ids'"]),
        ({"rename": {"logits": "scores"}}, ["missing output 'logits'"]),
        (
            {"ids_type": TensorProto.FLOAT},
            ["input 'input_ids' has type tensor(float), expected tensor(int64)"],
        ),
        (
            {"past_type": TensorProto.INT64, "present_type": TensorProto.INT64},
            ["input 'past_key_values.0.key' ... 'past_key_values.1.value' (4 tensors) has type tensor(int64), expected a float tensor"],
        ),
        (
            {"present_type": TensorProto.FLOAT16},
            [
                "input 'past_key_values.0.key' ... 'past_key_values.1.value' (4 tensors) is tensor(float) but its output is tensor(float16)"

            ],
        ),
        (
            {"num_layers": 3, "num_present_layers": 2},
            ["3 layers of cache inputs but 2 layers of cache outputs"],
        ),
        (
            {"num_layers": 0},
            ["no cache inputs 'past_key_values.{i}.key/value'", "no cache outputs"],
        ),
        (
            # only what the name pattern writes is a cache name
            {"rename": {"past_key_values.1.key": "past_key_values.01.key"}},
            [
                "unexpected input 'past_key_values.01.key' (cache inputs must be named "
                "'past_key_values.{i}.key' / 'past_key_values.{i}.value')",
                "missing input 'past_key_values.1.key'",
            ],
        ),
    ],
)
def test_contract_errors(bigram_lm, kwargs, expected):
    model, _ = bigram_lm(**kwargs)
    with pytest.raises(ContractError) as info:
        read_contract(_session(model))
    message = str(info.value)
    for part in expected:
        assert part in message
    # says what to do about it
    assert "diag.export_causal_lm" in message
    assert DIAG_LAYOUT.describe() in message
    # onnx_generate fails the same way, before running anything
    with pytest.raises(ContractError):
        onnx_generate(model, torch.tensor([[1, 2]]), max_new_tokens=2)


def test_contract_error_is_value_error(bigram_lm):
    model, _ = bigram_lm(rename={"attention_mask": "mask"})
    with pytest.raises(ValueError) as info:
        read_contract(_session(model))
    assert "missing input 'attention_mask'" in str(info.value)
    assert "unexpected input 'mask'" in str(info.value)


def test_dynamic_head_dim_is_refused(bigram_lm):
    model, _ = bigram_lm()
    for v in model.graph.input:
        if v.name.startswith("past_key_values"):
            v.type.tensor_type.shape.dim[3].dim_param = "head_dim"
    with pytest.raises(ContractError, match="kv_heads .* and head_dim .* must be static"):
        read_contract(_session(model))


def test_read_contract_of_a_path_points_to_inspect_onnx():
    with pytest.raises(TypeError, match=r"not a str: for a path, diag.inspect_onnx\(path\)"):
        read_contract("model.onnx")
