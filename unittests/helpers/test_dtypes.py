"""The one dtype table: ONNX element types against onnx's, numpy's, torch's and ONNX
Runtime's own names for them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from diag.helpers.dtypes import (
    numpy_dtype_to_onnx_dtype,
    onnx_dtype_to_numpy_dtype,
    onnx_dtype_to_torch_dtype,
    ort_type_to_onnx_dtype,
    torch_dtype_to_numpy_dtype,
    torch_dtype_to_onnx_dtype,
)


def test_torch_mapping():
    expected = {
        torch.float32: TensorProto.FLOAT,
        torch.uint8: TensorProto.UINT8,
        torch.int8: TensorProto.INT8,
        torch.int16: TensorProto.INT16,
        torch.int32: TensorProto.INT32,
        torch.int64: TensorProto.INT64,
        torch.bool: TensorProto.BOOL,
        torch.float16: TensorProto.FLOAT16,
        torch.float64: TensorProto.DOUBLE,
        torch.bfloat16: TensorProto.BFLOAT16,
        torch.float8_e4m3fn: TensorProto.FLOAT8E4M3FN,
        torch.float8_e5m2: TensorProto.FLOAT8E5M2,
    }
    assert {d: torch_dtype_to_onnx_dtype(d) for d in expected} == expected
    for dtype in [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool]:
        assert onnx_dtype_to_torch_dtype(torch_dtype_to_onnx_dtype(dtype)) == dtype
    with pytest.raises(ValueError, match="no torch dtype"):
        onnx_dtype_to_torch_dtype(TensorProto.STRING)
    with pytest.raises(ValueError, match="no ONNX element type"):
        torch_dtype_to_onnx_dtype(torch.quint8)


def test_numpy_mapping_agrees_with_onnx():
    for code in (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15):
        assert onnx_dtype_to_numpy_dtype(code) == helper.tensor_dtype_to_np_dtype(code)
        assert numpy_dtype_to_onnx_dtype(helper.tensor_dtype_to_np_dtype(code)) == code
    # ml_dtypes' types are read, never produced
    assert numpy_dtype_to_onnx_dtype(ml_dtypes.bfloat16) == TensorProto.BFLOAT16
    assert numpy_dtype_to_onnx_dtype(ml_dtypes.float8_e4m3fn) == TensorProto.FLOAT8E4M3FN
    with pytest.raises(ValueError, match="no numpy dtype"):
        onnx_dtype_to_numpy_dtype(TensorProto.BFLOAT16)
    with pytest.raises(ValueError, match="no ONNX element type"):
        numpy_dtype_to_onnx_dtype(np.dtype("datetime64[s]"))
    assert torch_dtype_to_numpy_dtype(torch.float16) == np.float16
    with pytest.raises(ValueError, match="no numpy dtype"):
        torch_dtype_to_numpy_dtype(torch.bfloat16)


@pytest.mark.parametrize(
    "code",
    [
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.BFLOAT16,
        TensorProto.DOUBLE,
        TensorProto.INT32,
        TensorProto.INT64,
        TensorProto.BOOL,
        TensorProto.UINT8,
        TensorProto.FLOAT8E4M3FN,
    ],
)
def test_ort_type_of_a_real_session(code):
    """The type string is the one ONNX Runtime itself gives an input of that type."""
    x = helper.make_tensor_value_info("x", code, [1])
    y = helper.make_tensor_value_info("y", code, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_type = session.get_inputs()[0].type
    assert ort_type_to_onnx_dtype(ort_type) == code


def test_ort_type_refused():
    with pytest.raises(ValueError, match="not a tensor"):
        ort_type_to_onnx_dtype("seq(tensor(float))")
