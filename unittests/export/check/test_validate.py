"""validate_causal_lm: a torch output holding NaN fails the check with the output named,
instead of passing because the same NaN sits on both sides."""

from __future__ import annotations

import pytest
import torch

from diag.export import ExportValidationError, export_causal_lm
from diag.export.check.validate import validate_causal_lm
from diag.models import get_untrained_model_with_inputs

#: the vocabulary column whose lm_head row is NaN: NaN logits there, in torch and ONNX
NAN_COLUMN = 7


def test_nan_in_torch_and_onnx_is_no_pass(tmp_path):
    model = get_untrained_model_with_inputs("llama")["model"].to(torch.float16)
    with torch.no_grad():
        model.lm_head.weight[NAN_COLUMN] = float("nan")
    result = export_causal_lm(model, tmp_path / "model.onnx", verify=False)
    report = validate_causal_lm(model, result.filename, raise_on_error=False)
    assert not report.ok
    # the cache is finite: only the logits are flagged, one NaN column per position
    assert {r["output"] for r in report.torch_nonfinite} == {"logits"}
    decode = next(r for r in report.torch_nonfinite if r["inputs"] == "decode")
    assert decode["torch_nonfinite"] == 1  # batch 1, one new token, one column
    # NaN at the same positions on both sides: the difference alone would pass
    assert decode["max_abs"] <= report.atol
    assert "(torch: 1 non-finite)" in report.table()
    with pytest.raises(ExportValidationError) as info:
        validate_causal_lm(model, result.filename)
    message = str(info.value)
    assert "returns NaN or infinities in logits on prefill" in message
    assert "float16 model" in message and "dtype='float32'" in message
