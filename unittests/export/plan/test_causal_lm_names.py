"""The seed page's low-level path: ``to_onnx`` under ``torch_export_patches`` on a zoo
model's inputs (its cache among them), then ``onnx_generate`` on the file, gives
``model.generate``'s tokens; the file is named by diag's contract."""

from __future__ import annotations

from typing import Any

import onnx
import pytest
import torch

from diag import get_untrained_model_with_inputs, onnx_generate, to_onnx, torch_export_patches
from diag.contract import DIAG_LAYOUT
from diag.export.plan.causal_lm_names import causal_lm_names
from diag.models import make_dummy_inputs
from unittests.conftest import TINY_ARCHITECTURES

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 30, 12]])


def export_as_the_seed_page(
    model: torch.nn.Module, inputs: dict, shapes: dict, path: Any
) -> onnx.ModelProto:
    """The page's four lines: without position ids (its loop feeds none), to_onnx
    under the patches."""
    inputs, shapes = dict(inputs), dict(shapes)
    inputs.pop("position_ids", None)
    shapes.pop("position_ids", None)
    with torch_export_patches(patch_transformers=True):
        to_onnx(model, (), kwargs=inputs, dynamic_shapes=shapes, filename=path)
    return onnx.load(str(path), load_external_data=False)


@pytest.mark.parametrize(
    # the same path on every architecture: one each release, the rest on the pinned set
    "arch",
    [a if a == "llama" else pytest.param(a, marks=pytest.mark.pinned) for a in TINY_ARCHITECTURES],
)
def test_seed_page_path_gives_generate_tokens(arch, tmp_path, one_torch_thread):
    data = get_untrained_model_with_inputs(arch)
    model = data["model"].eval()
    proto = export_as_the_seed_page(
        model, data["inputs"], data["dynamic_shapes"], tmp_path / "model.onnx"
    )
    num_layers = model.config.num_hidden_layers
    assert [i.name for i in proto.graph.input] == DIAG_LAYOUT.input_names(
        num_layers, with_position_ids=False, with_logits_to_keep=False
    )
    assert [o.name for o in proto.graph.output] == DIAG_LAYOUT.output_names(num_layers)
    expected = model.generate(
        PROMPT,
        attention_mask=torch.ones_like(PROMPT),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
    )
    got = onnx_generate(str(tmp_path / "model.onnx"), PROMPT, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, expected)


def test_names_left_alone_when_they_do_not_map():
    from transformers import DynamicCache

    cache = DynamicCache([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))])
    kwargs = {"input_ids": torch.zeros(1, 2), "past_key_values": cache}
    # no cache: not a causal LM's step
    assert causal_lm_names({"input_ids": torch.zeros(1, 2)}, ["input_ids"], ["linear_1"]) is None
    # another output besides the logits and the cache (hidden states...)
    assert (
        causal_lm_names(kwargs, ["input_ids", "cache_0", "cache_1"], ["a_1", "b_2", "c_3", "d_4"])
        is None
    )
    names = causal_lm_names(
        kwargs, ["input_ids", "cache_0", "cache_1"], ["linear_7", "cat_1", "cat_2"]
    )
    assert names == (
        ["input_ids", "past_key_values.0.key", "past_key_values.0.value"],
        ["logits", "present.0.key", "present.0.value"],
    )


@pytest.mark.slow
def test_seed_page_path_on_smollm2(smollm2, tmp_path):
    model, tokenizer = smollm2
    inputs, shapes = make_dummy_inputs(model)
    export_as_the_seed_page(model, inputs, shapes, tmp_path / "model.onnx")
    prompt = tokenizer("def print_prime(n):", return_tensors="pt").input_ids
    expected = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False
    )
    got = onnx_generate(str(tmp_path / "model.onnx"), prompt, max_new_tokens=20)
    assert torch.equal(got, expected)
