"""``export_causal_lm(..., layout="plain")``: the inputs the generate loops of other
tools feed (onnx-diagnostic's ``onnx_generate`` among them), and diag's own loop on it."""

from __future__ import annotations

import onnx
import pytest
import torch

from diag import export_causal_lm, get_untrained_model_with_inputs, onnx_generate
from diag.contract import PAST, PRESENT
from diag.export.plan.plain_layout import check_layout
from unittests.conftest import greedy_reference

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 30, 12]])


@pytest.fixture(scope="module")
def plain_llama(tmp_path_factory):
    """``(model, path)``: the zoo's tiny llama exported in the plain layout, validated."""
    model = get_untrained_model_with_inputs("llama")["model"].eval()
    path = tmp_path_factory.mktemp("plain") / "model.onnx"
    return model, export_causal_lm(model, path, layout="plain").filename


def _expected(model: torch.nn.Module) -> torch.Tensor:
    return greedy_reference(model, PROMPT)


def test_plain_names(plain_llama):
    _, path = plain_llama
    proto = onnx.load(path, load_external_data=False)
    # what such a loop feeds: ids, a mask of ones, then the cache inputs in graph order;
    # what it reads by position: the logits, then the cache in the same order
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", *PAST.names(2)]
    assert [o.name for o in proto.graph.output] == ["logits", *PRESENT.names(2)]


def test_diag_loop_drives_it(plain_llama, one_torch_thread):
    model, path = plain_llama
    got = onnx_generate(path, PROMPT, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, _expected(model))


def test_quantized_plain_export_keeps_the_layout(plain_llama, tmp_path):
    # the quantized file is made from the float export of the same layout
    model, _ = plain_llama
    result = export_causal_lm(model, tmp_path / "int8.onnx", layout="plain", quantize="int8")
    proto = onnx.load(result.filename, load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", *PAST.names(2)]


def test_left_padding_refused(plain_llama):
    _, path = plain_llama
    ids = torch.tensor([[0, 0, 5, 17], [3, 4, 5, 6]])
    mask = (ids != 0).long()
    with pytest.raises(ValueError, match="takes no position_ids .* layout='diag'"):
        onnx_generate(path, ids, attention_mask=mask, max_new_tokens=2)


def test_layout_values():
    assert check_layout("diag", "static") == "diag"
    with pytest.raises(ValueError, match=r"layout must be one of \('diag', 'plain'\)"):
        check_layout("flat")
    with pytest.raises(ValueError, match="static cache needs its write position"):
        check_layout("plain", "static")


@pytest.mark.extras
def test_onnx_diagnostic_loop_drives_it(plain_llama, monkeypatch):
    # the real loop, where a phase installs it (onnx-diagnostic 0.9.3 beside transformers 4.57.6)
    pytest.importorskip("onnx_diagnostic")
    from onnx_diagnostic.helpers.rt_helper import onnx_generate as odiag_generate
    from onnxruntime.capi import _pybind_state

    # onnx-diagnostic 0.9.3 calls OrtValue.from_dlpack(capsule, False); onnxruntime 1.32
    # takes the capsule alone: its own one-line fix, made for this test only
    from_dlpack = _pybind_state.OrtValue.from_dlpack
    monkeypatch.setattr(
        _pybind_state.OrtValue, "from_dlpack", staticmethod(lambda data, *_: from_dlpack(data))
    )
    model, path = plain_llama
    got = odiag_generate(path, PROMPT, eos_token_id=-1, max_new_tokens=12)
    assert torch.equal(got, _expected(model))
