"""Layouts found from the names of a graph and from the side files of a folder."""

from __future__ import annotations

import dataclasses
import json

import onnx
import pytest
import torch

import diag
from diag.contract import DIAG_LAYOUT, ContractError
from diag.contract.detect import detect_layout, detect_layout_from_names, find_model
from diag.contract.names import CacheNames
from diag.generation import onnx_generate


def _names(past: str, present: str, layers: int = 2, kinds=("key", "value")):
    ins = ["input_ids", "attention_mask"]
    ins += [past.format(layer=i, kind=k) for i in range(layers) for k in kinds]
    outs = ["logits"] + [present.format(layer=i, kind=k) for i in range(layers) for k in kinds]
    return ins, outs


def test_diag_names_are_diag_layout():
    ins, outs = _names("past_key_values.{layer}.{kind}", "present.{layer}.{kind}")
    assert detect_layout_from_names(ins + ["position_ids", "logits_to_keep"], outs) is DIAG_LAYOUT
    without = detect_layout_from_names(ins + ["logits_to_keep"], outs)
    assert without.name == "diag" and without.position_ids is None
    assert without.logits_to_keep == "logits_to_keep"
    # a diag export older than logits_to_keep, or of a forward without it
    every = detect_layout_from_names(ins + ["position_ids"], outs)
    assert every.name == "diag" and every.logits_to_keep is None
    assert every == dataclasses.replace(DIAG_LAYOUT, logits_to_keep=None)
    assert "logits of every position" in every.summary()


@pytest.mark.parametrize("cache", ["past_key_values", "cache"])
def test_transformers_names(cache):
    # transformers 5.23 names the cache past_key_values, 5.24 cache
    ins, outs = _names(
        f"input.{cache}.layers.{{layer}}.{{kind}}",
        f"output.{cache}.layers.{{layer}}.{{kind}}",
        layers=3,
        kinds=("keys", "values"),
    )
    layout = detect_layout_from_names(ins[:1] + ins[2:], outs)
    assert layout.past == CacheNames(f"input.{cache}.layers.{{layer}}.{{kind}}", ("keys", "values"))
    assert layout.present.parse(f"output.{cache}.layers.2.values") == (2, "values")
    # no mask input: a padded batch cannot be expressed
    assert layout.attention_mask is None and layout.padding == "none"


def test_mixed_names_fall_back_to_diag():
    ins, outs = _names("past_key_values.{layer}.{kind}", "present.{layer}.{kind}")
    ins[3] = "past.0.value"
    assert detect_layout_from_names(ins, outs) == DIAG_LAYOUT


def test_overrides(bigram_lm):
    model, _ = bigram_lm()
    layout = detect_layout(model, {"head_dim": 8, "name": "mine"})
    assert (layout.name, layout.head_dim, layout.past) == ("mine", 8, DIAG_LAYOUT.past)
    with pytest.raises(ValueError, match="unknown fields \\['head_size'\\]"):
        detect_layout(model, {"head_size": 8})
    with pytest.raises(TypeError, match="layout= takes a Layout or a dict of its fields"):
        detect_layout(model, 8)


def test_a_path_of_another_type_is_named():
    with pytest.raises(TypeError, match="give the path of a folder or of an .onnx file, not a int"):
        find_model(3)
    with pytest.raises(TypeError, match="give the path of a folder or of an .onnx file, not a int"):
        diag.inspect_onnx(3)


def test_unknown_layout_short_error(bigram_lm, tmp_path):
    # a cache named after no known pattern, 12 layers: one line per kind of problem
    rename = {}
    for i in range(12):
        for kind in ("key", "value"):
            rename[f"past_key_values.{i}.{kind}"] = f"kv_in_{kind[0]}{i}"
            rename[f"present.{i}.{kind}"] = f"kv_out_{kind[0]}{i}"
    model, _ = bigram_lm(num_layers=12, rename=rename)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    with pytest.raises(ContractError) as info:
        onnx_generate(str(path), torch.tensor([[1, 2]]), max_new_tokens=2)
    message = str(info.value)
    assert len(message.splitlines()) <= 7, message
    assert "unexpected input 'kv_in_k0' ... 'kv_in_v11' (24 tensors)" in message
    assert "python -m diag inspect PATH" in message


def test_folder_side_files(bigram_lm, tmp_path):
    model, _ = bigram_lm()
    onnx.save(model, tmp_path / "decoder.onnx")
    config = {
        "model": {
            "eos_token_id": 5,
            "decoder": {"filename": "decoder.onnx", "head_size": 4, "num_key_value_heads": 2},
        },
        "search": {"top_k": 7},
    }
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    found = find_model(tmp_path)
    assert found.layout.name == "onnxruntime-genai"
    assert found.layout.side_files == ("genai_config.json",)
    assert (found.layout.kv_heads, found.layout.head_dim) == (2, 4)
    assert found.generation_defaults == {"eos_token_id": 5, "top_k": 7}
    # no GroupQueryAttention in this graph: diag's left padding
    assert found.layout.padding == "left"
    # the genai defaults reach onnx_generate: eos 5 stops where it stops given by hand
    ids = torch.tensor([[1], [5 + 1]])
    by_hand = onnx_generate(model, ids, max_new_tokens=30, eos_token_id=5, pad_token_id=0)
    no_eos = onnx_generate(model, ids, max_new_tokens=30, eos_token_id=None)
    assert not torch.equal(by_hand, no_eos)  # the bigram's greedy path meets 5
    assert torch.equal(onnx_generate(str(tmp_path), ids, max_new_tokens=30, pad_token_id=0), by_hand)


def test_folder_without_side_files(tmp_path):
    with pytest.raises(ContractError, match="no decoder layout found in the folder"):
        find_model(tmp_path)


# the names a plain torch.onnx.export(..., dynamo=True) of a transformers causal LM
# gives (transformers 5.24: the flattened cache argument is "cache"), and the ones
# onnx-diagnostic 0.9.3 writes (checked on a file its to_onnx wrote for a two-layer
# llama on transformers 4.57.6)
TORCH_ONNX = (
    ["input_ids", "attention_mask", "position_ids", "cache_0", "cache_1", "cache_2", "cache_3"],
    ["linear_14", "cat_3", "cat_4", "cat_7", "cat_8"],
)
ONNX_DIAGNOSTIC = (
    ["input_ids", "attention_mask"]
    + [f"past_key_values_{k}_{i}" for i in range(2) for k in ("key", "value")],
    ["linear_14", "cat_13", "cat_14", "cat_15", "cat_16"],
)


@pytest.mark.parametrize(
    ("names", "expected"), [(TORCH_ONNX, "torch.onnx"), (ONNX_DIAGNOSTIC, "onnx-diagnostic")]
)
def test_exporter_names_read_by_position(names, expected):
    inputs, outputs = names
    layout = detect_layout_from_names(inputs, outputs)
    assert layout.name == expected
    assert layout.logits == "linear_14"
    cache_inputs = [n for n in inputs if n not in ("input_ids", "attention_mask", "position_ids")]
    assert [layout.past.name(i, k) for i in range(2) for k in ("key", "value")] == cache_inputs
    assert [layout.present.name(i, k) for i in range(2) for k in ("key", "value")] == outputs[1:]
    assert layout.position_ids == ("position_ids" if "position_ids" in inputs else None)
    assert layout.logits_to_keep is None


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        # one cache output too few: no pairing by position
        (TORCH_ONNX[0], TORCH_ONNX[1][:-1]),
        # inputs out of the exporter's order
        (TORCH_ONNX[0][:3] + ["cache_1", "cache_0", "cache_2", "cache_3"], TORCH_ONNX[1]),
        # outputs named after something else than nodes
        (TORCH_ONNX[0], ["logits", "k0", "v0", "k1", "v1"]),
    ],
)
def test_exporter_names_that_do_not_pair_fall_back_to_diag(inputs, outputs):
    assert detect_layout_from_names(inputs, outputs) == DIAG_LAYOUT


def test_unpaired_names_say_which_names_are_needed(bigram_lm):
    # a cache under names diag cannot pair: the message says what it needs, not that
    # the cache is missing
    rename = {"past_key_values.0.key": "cache_0", "past_key_values.0.value": "cache_1"}
    model, _ = bigram_lm(num_layers=1, rename=rename)
    layout = detect_layout(model)
    assert layout == DIAG_LAYOUT
    with pytest.raises(ContractError) as info:
        onnx_generate(model, torch.tensor([[1, 2]]), max_new_tokens=2)
    message = str(info.value)
    assert "exported without its KV cache" not in message
    assert "no input is named as a cache input 'past_key_values.{i}.key/value'" in message
    assert "diag reads them by position" in message
