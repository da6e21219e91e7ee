"""onnx_generate on graphs whose cache names say nothing, read by position: a plain
``torch.onnx.export(..., dynamo=True)`` of a transformers causal LM, and the naming of
onnx-diagnostic 0.9.3's export (its real tool too, where a phase installs it)."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest
import torch

from diag import get_untrained_model_with_inputs, onnx_generate, torch_export_patches
from diag.compat import torch_pytree
from diag.contract.detect import detect_layout
from unittests.conftest import greedy_reference

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 30, 12]])


@pytest.fixture(scope="module")
def llama():
    """The zoo's tiny llama and its trace inputs without position ids (the loops of
    other tools feed none)."""
    data = get_untrained_model_with_inputs("llama")
    inputs, shapes = dict(data["inputs"]), dict(data["dynamic_shapes"])
    inputs.pop("position_ids")
    shapes.pop("position_ids")
    return data["model"].eval(), inputs, shapes


@pytest.fixture(scope="module")
def plain_export(llama, tmp_path_factory):
    """The path of a plain ``torch.onnx.export(..., dynamo=True)`` of the tiny llama."""
    model, inputs, shapes = llama
    path = tmp_path_factory.mktemp("torch-onnx") / "model.onnx"
    with torch_export_patches(patch_transformers=True), torch.no_grad():
        torch.onnx.export(model, (), str(path), kwargs=inputs, dynamic_shapes=shapes, dynamo=True)
    return path


def _expected(model: torch.nn.Module) -> torch.Tensor:
    return greedy_reference(model, PROMPT)


def test_plain_torch_onnx_export(llama, plain_export, one_torch_thread):
    layout = detect_layout(str(plain_export))
    # the exporter's names: the flattened cache argument, the nodes' outputs
    assert layout.name == "torch.onnx"
    # the forward's cache argument: past_key_values on transformers 4.57, cache on 5.24
    arg = layout.past.listed[0][: -len("_0")]
    assert arg in ("cache", "past_key_values")
    assert layout.past.listed == tuple(f"{arg}_{i}" for i in range(4))
    assert layout.logits.startswith("linear_")
    got = onnx_generate(str(plain_export), PROMPT, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, _expected(llama[0]))


def test_onnx_diagnostic_naming(llama, plain_export, tmp_path, one_torch_thread):
    # onnx-diagnostic 0.9.3 writes these names (checked on a two-layer llama its to_onnx
    # exported on transformers 4.57.6): past_key_values_key_{i} / past_key_values_value_{i}
    # in, the nodes' names out (logits first, then each layer's key and value); the
    # plain export renamed to them stands for its file where it is not installed
    model_ir = ir.serde.deserialize_model(onnx.load(str(plain_export)))  # weights in memory
    cache = [v for v in model_ir.graph.inputs if v.name not in ("input_ids", "attention_mask")]
    for j, value in enumerate(cache):
        value.name = f"past_key_values_{('key', 'value')[j % 2]}_{j // 2}"
    path = tmp_path / "model.onnx"
    ir.save(model_ir, str(path))
    layout = detect_layout(str(path))
    assert layout.name == "onnx-diagnostic"
    got = onnx_generate(str(path), PROMPT, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, _expected(llama[0]))


@pytest.mark.extras
def test_onnx_diagnostic_export(llama, tmp_path, one_torch_thread):
    # the real tool, where a phase installs it (onnx-diagnostic 0.9.3 beside transformers 4.57.6)
    pytest.importorskip("onnx_diagnostic")
    from onnx_diagnostic.export.api import to_onnx as odiag_to_onnx
    from onnx_diagnostic.torch_export_patches import torch_export_patches as odiag_patches

    model, inputs, shapes = llama
    path = tmp_path / "model.onnx"
    registered = set(torch.utils._pytree.SUPPORTED_NODES)
    try:
        with odiag_patches(patch_transformers=True):
            odiag_to_onnx(
                model,
                (),
                kwargs=inputs,
                dynamic_shapes=shapes,
                filename=str(path),
                exporter="onnx-dynamo",
            )
    finally:
        # onnx-diagnostic 0.9.3 leaves the cache classes registered as pytree nodes:
        # later tests (diag's patches' report of what they register) expect them not to be
        for cls in set(torch.utils._pytree.SUPPORTED_NODES) - registered:
            torch_pytree.deregister_pytree_node(cls)
    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    assert names[2:4] == ["past_key_values_key_0", "past_key_values_value_0"]
    assert detect_layout(str(path)).name == "onnx-diagnostic"
    got = onnx_generate(str(path), PROMPT, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, _expected(model))
