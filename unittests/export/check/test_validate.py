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


def _row(inputs: str, output: str, max_abs: float, tolerance: float) -> dict:
    return {"inputs": inputs, "shapes": "b=2 s=4 p=5", "output": output,
            "max_abs": max_abs, "tolerance": tolerance}  # fmt: skip


def test_a_table_wider_than_the_page_comes_in_two_tables():
    from diag.export.check.validate import ValidationReport

    outputs = ["logits", "present.key", "present.value"]
    rows = [
        _row(name, out, 0.000233, 0.0021)  # raised tolerances: each cell says "(<= x)"
        for name in ("dummy", "prefill_left_padding")
        for out in outputs
    ]
    report = ValidationReport(atol=1e-4, rows=rows)
    wide = report.table(width=200).splitlines()
    assert len(wide) == 4 and max(map(len, wide)) > 88  # header, 2 input sets, verdict
    narrow = report.table().splitlines()
    assert max(map(len, narrow)) <= 88
    assert narrow[0].split() == ["inputs", "shapes", "logits"]
    assert narrow[4].split() == ["inputs", "present.key", "present.value"]
    cell = ["0.000233", "(<=", "0.0021)"]
    assert narrow[5].split() == ["dummy", *cell, *cell]
    assert narrow[-1] == "tolerance 0.0001: OK"
