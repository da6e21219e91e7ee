"""Element types: one table of ONNX element types with their names in ONNX Runtime,
numpy and torch, and the conversions between them.

ONNX Runtime writes a tensor's type ``tensor(<name>)`` with the lower-case name of
the ONNX element type (``tensor(float)`` is ``onnx.TensorProto.FLOAT`` = 1). numpy has
no bfloat16 nor float8 dtype of its own: ml_dtypes (a dependency of onnx) adds them
under the names of the table, which :func:`numpy_dtype_to_onnx_dtype` reads, but
:func:`onnx_dtype_to_numpy_dtype` converts to numpy's own dtypes only.

Example::

    >>> import torch
    >>> from diag.helpers.dtypes import (
    ...     onnx_dtype_to_numpy_dtype, ort_type_to_onnx_dtype, torch_dtype_to_onnx_dtype)
    >>> torch_dtype_to_onnx_dtype(torch.bfloat16), ort_type_to_onnx_dtype("tensor(float16)")
    (16, 10)
    >>> onnx_dtype_to_numpy_dtype(7)
    dtype('int64')
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class _ElementType(NamedTuple):
    onnx: int  # onnx.TensorProto.DataType, kept as a number to avoid importing onnx here
    name: str  # ONNX's name, lower case, as in ONNX Runtime's "tensor(<name>)"
    numpy: str | None  # numpy dtype name (ml_dtypes' name for the types numpy lacks)
    torch: str | None  # attribute of the torch module; skipped if this torch lacks it


_TABLE = (
    _ElementType(1, "float", "float32", "float32"),
    _ElementType(2, "uint8", "uint8", "uint8"),
    _ElementType(3, "int8", "int8", "int8"),
    _ElementType(4, "uint16", "uint16", "uint16"),
    _ElementType(5, "int16", "int16", "int16"),
    _ElementType(6, "int32", "int32", "int32"),
    _ElementType(7, "int64", "int64", "int64"),
    _ElementType(8, "string", "object", None),
    _ElementType(9, "bool", "bool", "bool"),
    _ElementType(10, "float16", "float16", "float16"),
    _ElementType(11, "double", "float64", "float64"),
    _ElementType(12, "uint32", "uint32", "uint32"),
    _ElementType(13, "uint64", "uint64", "uint64"),
    _ElementType(14, "complex64", "complex64", "complex64"),
    _ElementType(15, "complex128", "complex128", "complex128"),
    _ElementType(16, "bfloat16", "bfloat16", "bfloat16"),
    _ElementType(17, "float8e4m3fn", "float8_e4m3fn", "float8_e4m3fn"),
    _ElementType(18, "float8e4m3fnuz", "float8_e4m3fnuz", "float8_e4m3fnuz"),
    _ElementType(19, "float8e5m2", "float8_e5m2", "float8_e5m2"),
    _ElementType(20, "float8e5m2fnuz", "float8_e5m2fnuz", "float8_e5m2fnuz"),
)

# lookups derived from the table
_BY_ONNX: dict[int, _ElementType] = {row.onnx: row for row in _TABLE}
_BY_ORT: dict[str, int] = {f"tensor({row.name})": row.onnx for row in _TABLE}
_BY_NUMPY_NAME: dict[str, int] = {row.numpy: row.onnx for row in _TABLE if row.numpy}
_BY_TORCH: dict[torch.dtype, int] = {
    getattr(torch, row.torch): row.onnx
    for row in _TABLE
    if row.torch is not None and isinstance(getattr(torch, row.torch, None), torch.dtype)
}
_TORCH_BY_ONNX: dict[int, torch.dtype] = {v: k for k, v in _BY_TORCH.items()}


def _numpy_own(name: str | None) -> np.dtype | None:
    """numpy's own dtype of that name: None for ml_dtypes' types (void kind in numpy)
    and for names numpy does not know."""
    if name is None:
        return None
    try:
        dtype = np.dtype(name)
    except TypeError:
        return None
    return None if dtype.kind == "V" else dtype


def torch_dtype_to_onnx_dtype(dtype: torch.dtype) -> int:
    """Returns the ONNX element type (``onnx.TensorProto.FLOAT`` = 1, ...) of a torch dtype.

    >>> torch_dtype_to_onnx_dtype(torch.int64), torch_dtype_to_onnx_dtype(torch.bfloat16)
    (7, 16)
    """
    try:
        return _BY_TORCH[dtype]
    except KeyError:
        raise ValueError(f"torch dtype {dtype} has no ONNX element type.") from None


def onnx_dtype_to_torch_dtype(elem_type: int) -> torch.dtype:
    """Returns the torch dtype of an ONNX element type.

    >>> onnx_dtype_to_torch_dtype(10)
    torch.float16
    """
    try:
        return _TORCH_BY_ONNX[int(elem_type)]
    except KeyError:
        raise ValueError(f"ONNX element type {elem_type} has no torch dtype.") from None


def onnx_dtype_to_numpy_dtype(elem_type: int) -> np.dtype:
    """Returns numpy's own dtype of an ONNX element type (none for bfloat16 and float8).

    >>> onnx_dtype_to_numpy_dtype(10), onnx_dtype_to_numpy_dtype(6)
    (dtype('float16'), dtype('int32'))
    """
    row = _BY_ONNX.get(int(elem_type))
    dtype = _numpy_own(row.numpy if row else None)
    if dtype is None:
        raise ValueError(f"ONNX element type {elem_type} has no numpy dtype of numpy's own.")
    return dtype


def numpy_dtype_to_onnx_dtype(dtype: np.dtype | type | str) -> int:
    """Returns the ONNX element type of a numpy dtype (ml_dtypes' bfloat16 and float8
    included).

    >>> import numpy as np
    >>> numpy_dtype_to_onnx_dtype(np.float32), numpy_dtype_to_onnx_dtype("bfloat16")
    (1, 16)
    """
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    try:
        return _BY_NUMPY_NAME[name]
    except KeyError:
        raise ValueError(f"numpy dtype {name!r} has no ONNX element type.") from None


def torch_dtype_to_numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """Returns numpy's own dtype of a torch dtype (none for bfloat16 and float8).

    >>> torch_dtype_to_numpy_dtype(torch.float16)
    dtype('float16')
    """
    try:
        return onnx_dtype_to_numpy_dtype(torch_dtype_to_onnx_dtype(dtype))
    except ValueError:
        raise ValueError(f"torch dtype {dtype} has no numpy dtype of numpy's own.") from None


def ort_type_to_onnx_dtype(ort_type: str) -> int:
    """Returns the ONNX element type of an ONNX Runtime tensor type
    (``NodeArg.type``, ``"tensor(float)"``...).

    >>> ort_type_to_onnx_dtype("tensor(int64)")
    7
    """
    try:
        return _BY_ORT[ort_type]
    except KeyError:
        raise ValueError(
            f"ONNX Runtime type {ort_type!r} is not a tensor of a known element type."
        ) from None


__all__ = [
    "numpy_dtype_to_onnx_dtype",
    "onnx_dtype_to_numpy_dtype",
    "onnx_dtype_to_torch_dtype",
    "ort_type_to_onnx_dtype",
    "torch_dtype_to_numpy_dtype",
    "torch_dtype_to_onnx_dtype",
]
