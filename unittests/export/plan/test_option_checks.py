"""diag.export.plan.option_checks: each option of export_causal_lm refused with what to
pass instead, before anything is traced."""

from __future__ import annotations

import pytest

from diag.export.plan.option_checks import (
    STATIC_OPSET,
    check_attention,
    check_exporter,
    check_max_length,
    check_opset,
)


def test_the_accepted_values_pass_through():
    check_exporter("onnx-dynamo")
    check_opset(None)
    check_opset(STATIC_OPSET)
    assert check_attention("onnx") == "onnx" and check_attention("gqa") == "gqa"
    assert check_max_length("static", 2048) == 2048
    assert check_max_length("dynamic", None) is None


def test_bad_values_are_refused_with_what_to_pass():
    with pytest.raises(ValueError, match="exporter='torchscript' is not supported"):
        check_exporter("torchscript")
    with pytest.raises(TypeError, match=r"opset=True: give an int"):
        check_opset(True)
    with pytest.raises(ValueError, match="attention must be one of"):
        check_attention("sdpa")
    with pytest.raises(ValueError, match="needs max_length=N"):
        check_max_length("static", None)
    with pytest.raises(ValueError, match="at least 16"):
        check_max_length("static", 8)
    with pytest.raises(ValueError, match="pass cache='static'"):
        check_max_length("dynamic", 128)
    with pytest.raises(ValueError, match="'dynamic'.*'static'"):
        check_max_length("paged", 128)
