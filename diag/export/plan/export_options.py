"""The options of :func:`diag.export_causal_lm` that shape the file, with their defaults,
held once: the signature of ``export_causal_lm`` takes its defaults from here and
:func:`~diag.export.plan.export_plan.plan_export` reads them as one value.

>>> options = ExportOptions.of({"cache": "static", "max_length": 64, "force": True})
>>> options.cache, options.max_length, options.exporter
('static', 64, 'onnx-dynamo')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from diag.export.plan.quantize_options import QuantizeOptions


@dataclass(frozen=True)
class ExportOptions:
    """What the file is made with (the meanings: :func:`diag.export_causal_lm`)."""

    opset: int | None = None
    verbose: int = 0
    exporter: str = "onnx-dynamo"
    fuse: bool = True
    quantize: str | QuantizeOptions | None = None
    cache: str = "dynamic"
    max_length: int | None = None
    attention: str = "onnx"
    layout: str = "diag"
    dtype: str | torch.dtype | None = None

    @classmethod
    def of(cls, scope: dict[str, Any]) -> ExportOptions:
        """The options among the names of ``scope`` (a function's ``locals()``), the
        others left to their defaults (example: the module's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in scope.items() if name in names})

    def keywords(self) -> dict[str, Any]:
        """The options as the keywords of :func:`diag.export_causal_lm`.

        >>> ExportOptions(cache="static", max_length=64).keywords()["max_length"]
        64
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


#: the defaults, as the signature of :func:`diag.export_causal_lm` reads them
EXPORT_DEFAULTS = ExportOptions()

__all__ = ["EXPORT_DEFAULTS", "ExportOptions"]
