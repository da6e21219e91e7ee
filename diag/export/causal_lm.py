"""Exports a causal LM of transformers in one call: :func:`export_causal_lm`, the
orchestrator of the export's stages (each a sub-package of :mod:`diag.export`):

1. plan (:func:`diag.export.plan.export_plan.plan_export`): the options checked, the
   key, the file, the names; a file with the same key is reused;
2. make: the float export (:func:`diag.export.make.decoder_export.export_decoder`, or
   :func:`~diag.export.make.static_export.export_static_decoder` for a static cache),
   or with ``quantize=`` the weights of the float export (itself cached, so that int8
   and int4 exports of one model trace it once) quantized by ONNX Runtime's tools
   (:func:`diag.export.make.quantize.quantize_file`);
3. check: the export against torch on several input sets
   (:func:`diag.export.check.validate.validate_causal_lm`);
4. record: the sidecar (:mod:`diag.export.record.result`), written last, so that a
   file that failed its check is never reused.

Example::

    >>> import diag
    >>> model, tokenizer = diag.load_pretrained("smollm2-135m-instruct")  # doctest: +SKIP
    >>> result = diag.export_causal_lm(model, quantize="int4")  # doctest: +SKIP
    >>> result.filename, result.cached, result.validation.ok  # doctest: +SKIP
    ('~/.cache/diag/onnx/SmolLM2-135M-Instruct-int4-3f1c.../model.onnx', False, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from diag.export.check.validate import ValidationReport, validate_causal_lm
from diag.export.make.decoder_export import export_decoder
from diag.export.make.onnx_export import ExportTimings
from diag.export.make.quantize import quantize_file
from diag.export.make.static_export import export_static_decoder
from diag.export.plan.dtype import export_dtype, model_dtype, model_in_dtype, runs_on_cpu
from diag.export.plan.export_options import EXPORT_DEFAULTS, ExportOptions
from diag.export.plan.export_plan import ExportPlan, plan_export
from diag.export.plan.model import check_causal_lm
from diag.export.plan.quantize_options import QuantizeOptions
from diag.export.record.cache_eviction import keep_within_budget, mark_used
from diag.export.record.export_cache import is_cached, read_sidecar, write_sidecar
from diag.export.record.result import (
    ExportResult,
    result_of_sidecar,
    sidecar_entry,
    validation_entry,
)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the time of the block, then back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _reuse(model: torch.nn.Module, plan: ExportPlan, verify: bool, verbose: int) -> ExportResult:
    """The cached export of ``plan``, validated now when it never was and ``verify``
    asks for it (the validation then goes into its sidecar)."""
    side = read_sidecar(plan.filename) or {}
    result = dataclasses.replace(
        result_of_sidecar(plan.filename, side),
        key=plan.key,
        input_names=plan.input_names,
        output_names=plan.output_names,
    )
    if result.validation is None and verify and runs_on_cpu(plan.filename):
        # exported earlier with verify=False: validate now, once
        with _eval_mode(model):
            result.validation, result.validation_time = _check(model, plan.filename, None, verbose)
        side["validation"] = validation_entry(result.validation)
        write_sidecar(plan.filename, side)
    mark_used(plan.filename)
    if verbose:
        print(f"[export_causal_lm] reusing {plan.filename} (key {plan.key})")
    return result


def _make_float(model: torch.nn.Module, plan: ExportPlan) -> tuple[ExportResult, Any]:
    """Traces the float export of ``plan``; returns what it did and the dummy inputs it
    was traced on (the check runs them too)."""
    timings = ExportTimings()
    if plan.max_length is not None:
        done = export_static_decoder(
            model, plan.filename, plan.layout, plan.max_length, plan.trace, timings
        )
    else:
        done = export_decoder(model, plan.filename, plan.layout, plan.trace, timings)
    result = ExportResult(
        filename=plan.filename, key=plan.key, cached=False, input_names=plan.input_names,
        output_names=plan.output_names, timings=timings, patches=done.patches,
        fusions=dict(timings.fusions), extra_files=done.extra_files,
    )  # fmt: skip
    return result, done.inputs


def _make_quantized(
    model: torch.nn.Module,
    plan: ExportPlan,
    quantization: QuantizeOptions,
    force: bool,
    float_options: ExportOptions,
) -> ExportResult:
    """Quantizes the float export of the same model and options (made or reused in the
    export cache, unvalidated) into ``plan.filename``."""
    float_export = _export(model, None, False, force, float_options)
    timings = float_export.timings
    begin = time.perf_counter()
    written = quantize_file(float_export.filename, plan.filename, quantization)
    timings.quantize = time.perf_counter() - begin
    if plan.trace.verbose:
        print(f"[export_causal_lm] {quantization.name}: {timings.quantize:.1f}s -> {plan.filename}")
    return ExportResult(
        filename=plan.filename, key=plan.key, cached=False, input_names=plan.input_names,
        output_names=plan.output_names, timings=timings, patches=float_export.patches,
        fusions=float_export.fusions, quantization=quantization, source=float_export.filename,
        extra_files=[os.path.basename(w) for w in written[1:]],
    )  # fmt: skip


def _check(
    model: torch.nn.Module, filename: str, dummy_inputs: Any, verbose: int
) -> tuple[ValidationReport, float]:
    """The export checked against torch, and the seconds it took."""
    begin = time.perf_counter()
    validation = validate_causal_lm(model, filename, dummy_inputs=dummy_inputs, verbose=verbose)
    return validation, time.perf_counter() - begin


def export_causal_lm(
    model: torch.nn.Module,
    filename: str | os.PathLike | None = None,
    verify: bool = True,
    force: bool = False,
    opset: int | None = EXPORT_DEFAULTS.opset,
    verbose: int = EXPORT_DEFAULTS.verbose,
    exporter: str = EXPORT_DEFAULTS.exporter,
    fuse: bool = EXPORT_DEFAULTS.fuse,
    quantize: str | QuantizeOptions | None = EXPORT_DEFAULTS.quantize,
    cache: str = EXPORT_DEFAULTS.cache,
    max_length: int | None = EXPORT_DEFAULTS.max_length,
    attention: str = EXPORT_DEFAULTS.attention,
    layout: str = EXPORT_DEFAULTS.layout,
    dtype: str | torch.dtype | None = EXPORT_DEFAULTS.dtype,
) -> ExportResult:
    """Exports a causal LM of transformers to ONNX, following the export contract.

    :param model: a loaded causal LM (``AutoModelForCausalLM``), in eval mode
    :param filename: the ``.onnx`` file to write; None: under
        ``$DIAG_CACHE/onnx/<model-name>[-<quantization>]-<key>/model.onnx``
    :param verify: runs ONNX Runtime and torch on the dummy inputs and four other input
        sets (empty cache, batch 1, left padding) and raises
        :class:`~diag.export.check.validate.ExportValidationError` above tolerance
    :param force: exports again even when a cached export with the same key exists
        (the float export a quantized one comes from too)
    :param opset: ONNX opset (None: :data:`~diag.export.plan.export_plan.DEFAULT_OPSET`, 23: the first with the
        ``Attention``, ``RMSNormalization`` and ``RotaryEmbedding`` ops)
    :param verbose: prints the patches, the steps and the validation table
    :param exporter: ``"onnx-dynamo"``
    :param fuse: rewrites the decoder's patterns into fused ops
        (:func:`diag.export.make.rewrite.fuse_decoder`): far fewer nodes, so fewer kernels
        per decode step (``bench/bench_export.py`` counts the nodes); False keeps the exporter's graph
    :param quantize: ``"int4"``, ``"int8"`` or a
        :class:`~diag.export.plan.quantize_options.QuantizeOptions` (block size, symmetric,
        ``accuracy_level``, lm_head and embedding included or not): the weights are
        quantized by ONNX Runtime's tools from the float export, which is made (or
        reused) in the export cache first; None: float weights
    :param cache: ``"dynamic"`` (the default: ``present`` is ``past`` with the step's
        positions appended, what other tools drive too) or ``"static"``: buffers of
        ``max_length`` positions that past and present share, written in place with
        ``TensorScatter`` (opset 24, :data:`diag.contract.STATIC_LAYOUT`,
        :mod:`diag.export.make.static_cache`); :func:`diag.onnx_generate` picks the driver
        from the file
    :param max_length: with ``cache="static"``, the positions of each buffer: prompt
        plus new tokens of the longest generation (recorded in the metadata)
    :param attention: ``"onnx"`` (the default: ONNX's ``Attention`` op) or ``"gqa"``
        (ONNX Runtime's ``com.microsoft.GroupQueryAttention``, right padding,
        :data:`diag.contract.GQA_LAYOUT`); a model the rewrite cannot convert is
        refused with the reason
    :param layout: ``"diag"`` (the default: ``logits_to_keep`` among the inputs, the
        fastest for :func:`diag.onnx_generate`) or ``"plain"``
        (:data:`diag.contract.PLAIN_LAYOUT`: no ``logits_to_keep``, the inputs and
        outputs the generate loops of other tools feed and read, onnx-diagnostic's
        ``onnx_generate`` among them; :mod:`diag.export.plan.plain_layout`)
    :param dtype: the float dtype of the file, ``"float32"``, ``"float16"`` or
        ``"bfloat16"`` (the model is converted on a copy); None: the model's, except a
        bfloat16 model on the CPU, exported as float32 with a warning
        (:mod:`diag.export.plan.dtype`: ONNX Runtime's CPU provider cannot run bfloat16).
        A file the CPU provider cannot run is not validated (a warning says so).
    :return: an :class:`ExportResult` (usable as a path)

    The model's ``generation_config`` goes into the file's metadata
    (:func:`~diag.export.plan.generation_config.generation_config_json`), and so do the
    quantization options (:data:`diag.contract.QUANTIZATION_METADATA`).

    The key covers the model class and config, its generation config, a hash of the
    weights, the exporter, the opset, the quantization options, the cache layout
    (``cache`` and ``max_length``, static only), the attention (``"gqa"`` only), the
    layout (``"plain"`` only) and the versions of
    diag, torch, transformers, onnx, onnxscript and onnx-ir.
    """
    return _export(model, filename, verify, force, ExportOptions.of(locals()))


def _export(
    model: torch.nn.Module,
    filename: str | os.PathLike | None,
    verify: bool,
    force: bool,
    options: ExportOptions,
) -> ExportResult:
    """:func:`export_causal_lm` with its options as one value."""
    from diag.compat.versions import warn_if_transformers_untested

    warn_if_transformers_untested()  # once per process: a newer transformers may break it
    check_causal_lm(model)  # before its dtype is read: anything else gets a clear error
    source_dtype = model_dtype(model)
    target_dtype = export_dtype(model, options.dtype)
    model = model_in_dtype(model, target_dtype)
    plan = plan_export(model, filename, options, source_dtype=source_dtype)
    if not force and is_cached(plan.filename, plan.key):
        return _reuse(model, plan, verify, options.verbose)
    with _eval_mode(model):
        if plan.quantization is None:
            result, dummy_inputs = _make_float(model, plan)
        else:
            # the float export a quantized one comes from is made of the converted model
            float_options = dataclasses.replace(options, quantize=None, dtype=target_dtype)
            result = _make_quantized(model, plan, plan.quantization, force, float_options)
            dummy_inputs = None
        if verify and runs_on_cpu(plan.filename):
            result.validation, result.validation_time = _check(
                model, plan.filename, dummy_inputs, options.verbose
            )
    # the sidecar last: a model that failed validation is never reused
    write_sidecar(plan.filename, sidecar_entry(result, plan.key_parts))
    removed = keep_within_budget(plan.filename)
    if options.verbose and removed:
        print(f"[export_causal_lm] the export cache is over its budget: removed {removed}")
    return result


__all__ = ["export_causal_lm"]
