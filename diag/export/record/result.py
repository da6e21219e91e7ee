"""What an export did (:class:`ExportResult`) and its record in the sidecar next to
the model, written last so that the next export with the same key reuses the file.

Example::

    >>> result = ExportResult("m.onnx", key="0" * 16, cached=False, input_names=["input_ids"],
    ...                       output_names=["logits"])
    >>> side = sidecar_entry(result, key_parts={})
    >>> result_of_sidecar("m.onnx", side).input_names
    ['input_ids']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from diag.export.check.validate import ValidationReport
from diag.export.make.onnx_export import ExportTimings
from diag.export.plan.quantize_options import QuantizeOptions


@dataclass
class ExportResult:
    """What :func:`diag.export_causal_lm` did. Usable as a path (``os.fspath(result)``)."""

    filename: str
    key: str
    cached: bool
    input_names: list[str]
    output_names: list[str]
    timings: ExportTimings = field(default_factory=ExportTimings)
    validation: ValidationReport | None = None
    validation_time: float = 0.0
    patches: list[str] = field(default_factory=list)
    #: how many times each fusion fired (:func:`diag.export.make.rewrite.fuse_decoder`)
    fusions: dict[str, int] = field(default_factory=dict)
    #: the quantization applied, None for a float export
    quantization: QuantizeOptions | None = None
    #: the float export a quantized one was made from
    source: str | None = None
    #: the files written beside the model (its external data), names relative to its folder
    extra_files: list[str] = field(default_factory=list)

    def __fspath__(self) -> str:
        return self.filename

    def __str__(self) -> str:
        return self.filename


def _timings_of(side: dict[str, Any]) -> ExportTimings:
    """The :class:`ExportTimings` a sidecar remembers (its ``as_dict``)."""
    t = side.get("timings") or {}
    return ExportTimings(
        torch_export=t.get("torch.export", 0.0),
        translate=t.get("translate", 0.0),
        optimize=t.get("optimize", 0.0),
        save=t.get("save", 0.0),
        quantize=t.get("quantize", 0.0),
    )


def validation_of(side: dict[str, Any]) -> ValidationReport | None:
    """The validation a sidecar remembers, None when the export was not validated."""
    v = side.get("validation")
    if v is None:
        return None
    return ValidationReport(atol=v["atol"], rows=v["rows"], quantization=v.get("quantization"))


def validation_entry(validation: ValidationReport | None) -> dict[str, Any] | None:
    """``validation`` as the sidecar stores it."""
    if validation is None:
        return None
    return {
        "atol": validation.atol,
        "rows": validation.rows,
        "quantization": validation.quantization,
    }


def sidecar_entry(result: ExportResult, key_parts: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of a fresh export: its key and what the key hashes, the files beside
    the model, the names, what the export did and its validation."""
    return {
        "key": result.key,
        "key_parts": key_parts,
        "files": result.extra_files,
        "input_names": result.input_names,
        "output_names": result.output_names,
        "timings": result.timings.as_dict(),
        "fusions": result.fusions,
        "patches": result.patches,
        "source": result.source,
        "validation": validation_entry(result.validation),
    }


def result_of_sidecar(filename: str | os.PathLike, side: dict[str, Any]) -> ExportResult:
    """The :class:`ExportResult` of a cached export, read from its sidecar ``side``."""
    quantization = side.get("key_parts", {}).get("options", {}).get("quantize")
    return ExportResult(
        filename=os.fspath(filename),
        key=side.get("key", ""),
        cached=True,
        input_names=side.get("input_names", []),
        output_names=side.get("output_names", []),
        timings=_timings_of(side),
        validation=validation_of(side),
        patches=side.get("patches", []),
        fusions=side.get("fusions") or {},
        quantization=QuantizeOptions(**quantization) if quantization else None,
        source=side.get("source"),
        extra_files=side.get("files", []),
    )


__all__ = [
    "ExportResult",
    "result_of_sidecar",
    "sidecar_entry",
    "validation_entry",
    "validation_of",
]
