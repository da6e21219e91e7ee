"""export_causal_lm(dtype=): the file's dtype, the bfloat16 default on the CPU, the
refusal of a bfloat16 file by the CPU provider, and every zoo architecture in float16."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from diag import contract
from diag.cli.inspect import cpu_line
from diag.contract.inspection import inspect_onnx
from diag.diagnose import first_divergence
from diag.diagnose.layers.localize import DEFAULT_TOL, layer_tolerance, localize_layer
from diag.export import export_causal_lm
from diag.export.plan.dtype import DtypeWarning, export_dtype, model_in_dtype, parse_dtype
from diag.generation import onnx_generate, open_steps
from diag.models import get_untrained_model_with_inputs
from diag.ort.provider_support import ProviderSupportError
from unittests.conftest import TINY_ARCHITECTURES, moe_params


def _llama(dtype: torch.dtype) -> torch.nn.Module:
    return get_untrained_model_with_inputs("llama")["model"].to(dtype)


def _prompt() -> torch.Tensor:
    return torch.tensor([[3, 5, 7, 11, 13, 17]])


def test_parse_dtype_refuses_what_is_no_export_dtype():
    with pytest.raises(ValueError, match="'float16'"):
        parse_dtype("int8")
    with pytest.raises(ValueError, match="not an export dtype"):
        parse_dtype(torch.float64)


def test_model_in_dtype_leaves_the_callers_model_alone():
    model = _llama(torch.float32)
    half = model_in_dtype(model, torch.float16)
    assert next(half.parameters()).dtype == torch.float16
    assert next(model.parameters()).dtype == torch.float32
    assert model_in_dtype(model, torch.float32) is model


def test_float16_model_keeps_its_dtype_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DtypeWarning)
        assert export_dtype(_llama(torch.float16), None) == torch.float16


def test_bfloat16_model_exports_float32_by_default_and_generates(tmp_path):
    model = _llama(torch.bfloat16)
    with pytest.warns(DtypeWarning, match="exported as float32.*dtype='bfloat16'"):
        result = export_causal_lm(model, tmp_path / "model.onnx")
    assert result.validation is not None and result.validation.ok
    session = open_steps(result).backend.session
    assert contract.metadata_dtype(session) == {"dtype": "float32", "model_dtype": "bfloat16"}
    # the file is the bfloat16 weights in float32: it generates what that model does
    reference = copy.deepcopy(model).to(torch.float32)
    expected = reference.generate(_prompt(), max_new_tokens=12, do_sample=False)
    got = onnx_generate(result, _prompt(), max_new_tokens=12)
    assert got.tolist() == expected.tolist()
    # layer by layer, torch runs in the file's dtype: the export's fidelity, in float32
    report = localize_layer(model, result.filename, _prompt())
    assert report.culprit is None and report.tol == DEFAULT_TOL, str(report)


def test_explicit_bfloat16_export_is_refused_on_the_cpu(tmp_path):
    model = _llama(torch.float32)
    with pytest.warns(DtypeWarning, match="not validated"):
        result = export_causal_lm(model, tmp_path / "model.onnx", dtype="bfloat16")
    assert result.validation is None
    with pytest.raises(ProviderSupportError) as info:
        onnx_generate(result, _prompt(), max_new_tokens=3)
    message = str(info.value)
    assert "bfloat16" in message and "CPUExecutionProvider" in message
    assert "MatMul" in message and "dtype='float32'" in message and "CUDA" in message
    # inspect says the same without running it
    report = inspect_onnx(result.filename)
    assert report.dtypes == {"model.onnx": "bfloat16 (exported from a float32 model)"}
    assert cpu_line(report).startswith("CPUExecutionProvider: no.")


#: llama in every release's phase; the others are second architectures of the same check
FLOAT16_ARCHITECTURES = [
    pytest.param(p, marks=[pytest.mark.pinned]) if isinstance(p, str) and p != "llama" else p
    for p in TINY_ARCHITECTURES + moe_params()
]


#: the float16 exports validated against torch
VALIDATED = ("llama", "phimoe")


@pytest.mark.parametrize("name", FLOAT16_ARCHITECTURES)
def test_every_architecture_in_float16(name, tmp_path):
    """The float16 export generates the float16 model's tokens, or they part at a near
    tie (rounding: ONNX Runtime's CPU provider computes float16 nodes in float32)."""
    model = get_untrained_model_with_inputs(name)["model"].to(torch.float16)
    # validated on llama, and on phimoe (its float64 reference needs experts with a
    # float64 kernel): the others check their generations only
    result = export_causal_lm(model, tmp_path / "model.onnx", verify=name in VALIDATED)
    assert result.validation is None or result.validation.ok
    ids = torch.tensor([[3, 5, 7, 11, 13], [0, 0, 2, 4, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    div = first_divergence(model, result, ids, mask, max_new_tokens=12)
    assert not div or div.near_tie, str(div)
    if name in VALIDATED:
        # layer by layer, float16 rounding is no culprit (float32's tolerance would be)
        report = localize_layer(model, result.filename, ids[:1])
        assert report.culprit is None and report.tol == layer_tolerance(model), str(report)
