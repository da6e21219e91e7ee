"""The float dtype of an export: :func:`export_dtype` picks it, :func:`model_in_dtype`
gives the model to trace in it, :func:`dtype_metadata` records it in the file.

``export_causal_lm(model, dtype=None)`` exports in the model's own dtype, with one
exception: ONNX Runtime's CPU provider has no bfloat16 kernel for ``MatMul`` (nor for
most ops of a decoder, :mod:`diag.ort.provider_support`), so a bfloat16 model exported
for the CPU becomes float32 (every bfloat16 value is a float32 value: nothing is lost),
and a :class:`DtypeWarning` says so and how to keep bfloat16 for CUDA
(``dtype="bfloat16"``).

The file's metadata (:data:`diag.contract.DTYPE_METADATA`) holds the export's dtype and
the dtype of the model it came from: ``python -m diag inspect`` shows both.

Example::

    >>> import torch
    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"].to(torch.bfloat16)
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     warnings.simplefilter("always")
    ...     export_dtype(model, None)
    torch.float32
    >>> export_dtype(model, "float16")
    torch.float16
"""

from __future__ import annotations

import copy
import json
import warnings

import torch

from diag.contract.metadata import DTYPE_METADATA

#: the dtypes ``export_causal_lm(dtype=...)`` takes, by name
EXPORT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class DtypeWarning(UserWarning):
    """The export's dtype is not the model's: said once per export."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``.

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The torch dtype named by ``dtype`` (None stays None), refused with the accepted
    names when it is none of :data:`EXPORT_DTYPES`.

    >>> parse_dtype("float16"), parse_dtype(torch.bfloat16), parse_dtype(None)
    (torch.float16, torch.bfloat16, None)
    """
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype in EXPORT_DTYPES.values():
            return dtype
        dtype = dtype_name(dtype)
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in EXPORT_DTYPES:
        return EXPORT_DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(
        f"dtype={dtype!r} is not an export dtype: use None (the model's), "
        + ", ".join(repr(k) for k in EXPORT_DTYPES)
        + "."
    )


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of ``model``'s floating-point parameters (float32 without any)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def export_dtype(model: torch.nn.Module, dtype: str | torch.dtype | None) -> torch.dtype:
    """The dtype to export ``model`` in: ``dtype`` when given, else the model's, except
    that a bfloat16 model on the CPU becomes float32 with a :class:`DtypeWarning` (the
    CPU provider cannot run a bfloat16 graph; a model on CUDA keeps bfloat16)."""
    wanted = parse_dtype(dtype)
    if wanted is not None:
        return wanted
    own = model_dtype(model)
    device = next(model.parameters()).device
    if own == torch.bfloat16 and device.type == "cpu":
        warnings.warn(
            f"{type(model).__name__} is bfloat16: exported as float32, since ONNX Runtime's "
            "CPU provider has no bfloat16 kernels (MatMul...); pass dtype='bfloat16' to keep "
            "bfloat16 for the CUDA provider, or dtype='float16' for a half-size file.",
            DtypeWarning,
            stacklevel=3,
        )
        return torch.float32
    return own


def model_in_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` itself when it is already in ``dtype``, else a copy converted to it (the
    caller's model is left as it is: a float32 model rounded to float16 and back would
    not be the same model)."""
    if model_dtype(model) == dtype:
        return model
    return copy.deepcopy(model).to(dtype)


def runs_on_cpu(filename: str) -> bool:
    """Whether ONNX Runtime's CPU provider can run the export ``filename``, which the
    validation needs; a :class:`DtypeWarning` says why not when it cannot (a bfloat16
    export, made for CUDA)."""
    from diag.ort.provider_support import CPU, support_message, unsupported_nodes

    unsupported = unsupported_nodes(filename, CPU)
    if unsupported:
        warnings.warn(
            support_message(unsupported, CPU, repr(filename))
            + " The export is not validated against torch: validate it where it runs.",
            DtypeWarning,
            stacklevel=3,
        )
    return not unsupported


def dtype_metadata(dtype: torch.dtype, source: torch.dtype) -> dict[str, str]:
    """The metadata entry (:data:`~diag.contract.metadata.DTYPE_METADATA`) of an export in
    ``dtype`` of a model in ``source``.

    >>> dtype_metadata(torch.float32, torch.bfloat16)
    {'dtype': '{"dtype": "float32", "model_dtype": "bfloat16"}'}
    """
    value = {"dtype": dtype_name(dtype), "model_dtype": dtype_name(source)}
    return {DTYPE_METADATA: json.dumps(value)}


__all__ = [
    "EXPORT_DTYPES",
    "DtypeWarning",
    "dtype_metadata",
    "dtype_name",
    "export_dtype",
    "model_dtype",
    "model_in_dtype",
    "parse_dtype",
    "runs_on_cpu",
]
