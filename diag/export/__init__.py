"""Export a causal LM of transformers to ONNX.

* :func:`torch_export_patches`: the context manager that makes transformers' models
  and caches exportable with :func:`torch.export.export`;
* :func:`to_onnx`: export any model, timed, optimised, written atomically;
* :func:`export_causal_lm`: export a causal LM in one call, following the export
  contract (:mod:`diag.contract`), validated against torch, cached;
* :func:`fuse_decoder`: rewrite a decoder's RMSNorm, rotary, attention and projections
  into the ONNX ops made for them (``export_causal_lm`` does it by default);
* :class:`QuantizeOptions`: ``export_causal_lm(model, quantize="int4")`` quantizes the
  weights with ONNX Runtime's tools (:mod:`diag.export.make.quantize`).

An export goes through four stages, one sub-package each, which
:func:`export_causal_lm` (:mod:`diag.export.causal_lm`) runs in turn:
:mod:`~diag.export.plan` (the model and the options checked, the key, the file, the
names), :mod:`~diag.export.make` (trace, patches, rewrite, optimisation, quantization,
the atomic save), :mod:`~diag.export.check` (the validation against torch) and
:mod:`~diag.export.record` (the sidecar in the export cache, the result); each
imports only the stages before it.

Example (the export itself is skipped here: it takes longer than a docstring example
should, and unittests/export/test_export_causal_lm.py runs it)::

    >>> import diag
    >>> data = diag.get_untrained_model_with_inputs("llama")
    >>> sorted(data)
    ['config', 'dynamic_shapes', 'inputs', 'model', 'name']
    >>> result = diag.export_causal_lm(data["model"])  # doctest: +SKIP
    >>> result.cached, result.validation.max_abs < 1e-4  # doctest: +SKIP
    (False, True)
"""

from __future__ import annotations

from diag.export.causal_lm import export_causal_lm
from diag.export.check.validate import ExportValidationError, ValidationReport, validate_causal_lm
from diag.export.make.onnx_export import ExportTimings, to_onnx
from diag.export.make.patches import PatchReport, torch_export_patches
from diag.export.make.rewrite import fuse_decoder
from diag.export.plan.quantize_options import QuantizeOptions
from diag.export.record.result import ExportResult

__all__ = [
    "ExportResult",
    "ExportTimings",
    "ExportValidationError",
    "PatchReport",
    "QuantizeOptions",
    "ValidationReport",
    "export_causal_lm",
    "fuse_decoder",
    "to_onnx",
    "torch_export_patches",
    "validate_causal_lm",
]
