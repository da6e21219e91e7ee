"""Exports a causal LM of transformers in one call: :func:`export_causal_lm`.

The steps, one module each:

1. the float export (:func:`diag.export.decoder_export.export_decoder`): dummy inputs
   and dynamic shapes, ``torch.export`` under the patches, the contract's names, the
   generation config in the metadata, the file written atomically;
2. with ``quantize=``, the weights quantized by ONNX Runtime's tools
   (:func:`diag.export.quantize.quantize_file`), from the float export (itself cached,
   so that int8 and int4 exports of one model trace it once);
3. the check against torch on several input sets
   (:func:`diag.export.validate.validate_causal_lm`; tolerances made for quantization
   when the file is quantized);
4. the key in a sidecar (:mod:`diag.export.export_cache`), written last, so that the
   next call with the same model and options reuses the file.

Example::

    >>> import diag
    >>> model, tokenizer = diag.load_pretrained("smollm2-135m-instruct")  # doctest: +SKIP
    >>> result = diag.export_causal_lm(model, quantize="int4")  # doctest: +SKIP
    >>> result.filename, result.cached, result.validation.ok  # doctest: +SKIP
    ('~/.cache/diag/onnx/SmolLM2-135M-Instruct-int4-3f1c.../model.onnx', False, True)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from diag import contract
from diag.export.attention_kind import check_attention
from diag.export.decoder_export import TraceOptions, check_causal_lm, export_decoder, model_name
from diag.export.dtype import (
    dtype_metadata,
    dtype_name,
    export_dtype,
    model_dtype,
    model_in_dtype,
    runs_on_cpu,
)
from diag.export.export_cache import (
    cache_dir,
    export_key_parts,
    is_cached,
    key_of_parts,
    read_sidecar,
    write_sidecar,
)
from diag.export.generation_config import generation_config_json
from diag.export.logits_to_keep import takes_logits_to_keep
from diag.export.onnx_export import ExportTimings, _check_exporter, check_opset
from diag.export.plain_layout import check_layout
from diag.export.quantize import QuantizeOptions, quantize_file
from diag.export.static_cache import STATIC_OPSET
from diag.export.static_export import check_max_length, export_static_decoder
from diag.export.validate import ValidationReport, validate_causal_lm
from diag.export.validation_inputs import takes_position_ids
from diag.helpers.atomic_write import check_file_destination
from diag.models.cache_layout import cache_layout

#: the opset of :func:`export_causal_lm`: ``Attention`` (grouped-query heads and the
#: cache in one op), ``RMSNormalization`` and ``RotaryEmbedding`` exist from 23 on
DEFAULT_OPSET = 23

# the float pipeline, a module global so that a test can count its calls
_export = export_decoder
_export_static = export_static_decoder


@dataclass
class ExportResult:
    """What :func:`export_causal_lm` did. Usable as a path (``os.fspath(result)``)."""

    filename: str
    key: str
    cached: bool
    input_names: list[str]
    output_names: list[str]
    timings: ExportTimings = field(default_factory=ExportTimings)
    validation: ValidationReport | None = None
    validation_time: float = 0.0
    patches: list[str] = field(default_factory=list)
    #: how many times each fusion fired (:func:`diag.export.rewrite.fuse_decoder`)
    fusions: dict[str, int] = field(default_factory=dict)
    #: the quantization applied, None for a float export
    quantization: QuantizeOptions | None = None
    #: the float export a quantized one was made from
    source: str | None = None

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


def _validation_of(side: dict[str, Any]) -> ValidationReport | None:
    v = side.get("validation")
    if v is None:
        return None
    return ValidationReport(atol=v["atol"], rows=v["rows"], quantization=v.get("quantization"))


def _validation_entry(validation: ValidationReport | None) -> dict[str, Any] | None:
    if validation is None:
        return None
    return {"atol": validation.atol, "rows": validation.rows, "quantization": validation.quantization}


def _reuse(
    model: torch.nn.Module, filename: str, key: str, verify: bool, verbose: int, names: tuple
) -> ExportResult:
    """The cached export at ``filename``, validated now when it never was and
    ``verify`` asks for it."""
    side = read_sidecar(filename) or {}
    validation = _validation_of(side)
    validation_time = 0.0
    if validation is None and verify and runs_on_cpu(filename):
        # exported earlier with verify=False: validate now, once
        begin = time.perf_counter()
        validation = validate_causal_lm(model, filename, verbose=verbose)
        validation_time = time.perf_counter() - begin
        side["validation"] = _validation_entry(validation)
        write_sidecar(filename, side)
    if verbose:
        print(f"[export_causal_lm] reusing {filename} (key {key})")
    quantization = side.get("key_parts", {}).get("options", {}).get("quantize")
    return ExportResult(
        filename=filename,
        key=key,
        cached=True,
        input_names=names[0],
        output_names=names[1],
        timings=_timings_of(side),
        validation=validation,
        validation_time=validation_time,
        patches=side.get("patches", []),
        fusions=side.get("fusions") or {},
        quantization=QuantizeOptions(**quantization) if quantization else None,
        source=side.get("source"),
    )


def export_causal_lm(
    model: torch.nn.Module,
    filename: str | os.PathLike | None = None,
    verify: bool = True,
    force: bool = False,
    opset: int | None = None,
    verbose: int = 0,
    exporter: str = "onnx-dynamo",
    fuse: bool = True,
    quantize: str | QuantizeOptions | None = None,
    cache: str = "dynamic",
    max_length: int | None = None,
    attention: str = "onnx",
    layout: str = "diag",
    dtype: str | torch.dtype | None = None,
) -> ExportResult:
    """Exports a causal LM of transformers to ONNX, following the export contract.

    :param model: a loaded causal LM (``AutoModelForCausalLM``), in eval mode
    :param filename: the ``.onnx`` file to write; None: under
        ``$DIAG_CACHE/onnx/<model-name>[-<quantization>]-<key>/model.onnx``
    :param verify: runs ONNX Runtime and torch on the dummy inputs and four other input
        sets (empty cache, batch 1, left padding) and raises
        :class:`~diag.export.validate.ExportValidationError` above tolerance
    :param force: exports again even when a cached export with the same key exists
        (the float export a quantized one comes from too)
    :param opset: ONNX opset (None: :data:`DEFAULT_OPSET`, 23: the first with the
        ``Attention``, ``RMSNormalization`` and ``RotaryEmbedding`` ops)
    :param verbose: prints the patches, the steps and the validation table
    :param exporter: ``"onnx-dynamo"``
    :param fuse: rewrites the decoder's patterns into fused ops
        (:func:`diag.export.rewrite.fuse_decoder`): a decode step runs ~560 kernels
        instead of ~2,400 (SmolLM2); False keeps the exporter's graph
    :param quantize: ``"int4"``, ``"int8"`` or a
        :class:`~diag.export.quantize.QuantizeOptions` (block size, symmetric,
        ``accuracy_level``, lm_head and embedding included or not): the weights are
        quantized by ONNX Runtime's tools from the float export, which is made (or
        reused) in the export cache first; None: float weights
    :param cache: ``"dynamic"`` (the default: ``present`` is ``past`` with the step's
        positions appended, what other tools drive too) or ``"static"``: buffers of
        ``max_length`` positions that past and present share, written in place with
        ``TensorScatter`` (opset 24, :data:`diag.contract.STATIC_LAYOUT`,
        :mod:`diag.export.static_cache`); :func:`diag.onnx_generate` picks the driver
        from the file
    :param max_length: with ``cache="static"``, the positions of each buffer: prompt
        plus new tokens of the longest generation (recorded in the metadata)
    :param layout: ``"diag"`` (the default: ``logits_to_keep`` among the inputs, the
        fastest for :func:`diag.onnx_generate`) or ``"plain"``
        (:data:`diag.contract.PLAIN_LAYOUT`: no ``logits_to_keep``, the inputs and
        outputs the generate loops of other tools feed and read, onnx-diagnostic's
        ``onnx_generate`` among them; :mod:`diag.export.plain_layout`)
    :param dtype: the float dtype of the file, ``"float32"``, ``"float16"`` or
        ``"bfloat16"`` (the model is converted on a copy); None: the model's, except a
        bfloat16 model on the CPU, exported as float32 with a warning
        (:mod:`diag.export.dtype`: ONNX Runtime's CPU provider cannot run bfloat16).
        A file the CPU provider cannot run is not validated (a warning says so).
    :return: an :class:`ExportResult` (usable as a path)

    The model's ``generation_config`` goes into the file's metadata
    (:func:`~diag.export.generation_config.generation_config_json`), and so do the
    quantization options (:data:`diag.contract.QUANTIZATION_METADATA`).

    The key covers the model class and config, its generation config, a hash of the
    weights, the exporter, the opset, the quantization options, the cache layout
    (``cache`` and ``max_length``, static only), the attention (``"gqa"`` only), the
    layout (``"plain"`` only) and the versions of
    diag, torch, transformers, onnx, onnxscript and onnx-ir.
    """
    from diag.compat.versions import warn_if_transformers_untested

    warn_if_transformers_untested()  # once per process: a newer transformers may break it
    check_causal_lm(model)
    source_dtype = model_dtype(model)
    target_dtype = export_dtype(model, dtype)
    model = model_in_dtype(model, target_dtype)
    _check_exporter(exporter)
    check_opset(opset)
    quantization = QuantizeOptions.parse(quantize)
    max_length = check_max_length(cache, max_length)
    static = max_length is not None
    gqa = check_attention(attention) == "gqa"
    plain = check_layout(layout, cache) == "plain"
    if gqa and not fuse:
        raise ValueError("attention='gqa' rewrites the fused attention: it needs fuse=True.")
    # the cache's shapes come from the model's own cache, not from config attributes
    # that some architectures do not use (multi-query falcon, latent attention...);
    # an unsupported cache fails here, before anything is hashed or traced
    layout = cache_layout(model)
    if opset is None:
        opset = STATIC_OPSET if static else DEFAULT_OPSET
    # the plain layout takes what other tools' loops feed: no position ids (a loop
    # without them lets the model count positions from the cache, as model.generate
    # does on a batch without padding)
    with_position_ids = takes_position_ids(model) and not plain
    options: dict[str, Any] = {
        "exporter": exporter,
        "opset": opset,
        "with_position_ids": with_position_ids,
        "fuse": bool(fuse),
        # written in the file's metadata: another eos or pad needs another file
        "generation_config": generation_config_json(model),
    }
    with_logits_to_keep = takes_logits_to_keep(model) and not plain
    if with_logits_to_keep:
        # another graph than the exports made before the input existed
        options["logits_to_keep"] = True
    if quantization is not None:
        # only then: the keys of float exports stay what they were
        options["quantize"] = quantization.as_dict()
    if static:
        # only then, as quantize: the keys of dynamic exports stay what they were
        options["cache"] = cache
        options["max_length"] = max_length
    if gqa:
        # only then, as quantize: the keys of the opset-23 exports stay what they were
        options["attention"] = attention
    if plain:
        # only then, as quantize: the keys of diag-layout exports stay what they were
        options["layout"] = "plain"
    if target_dtype != source_dtype:
        # only then, as quantize: the keys of exports in the model's dtype stay the same
        options["dtype"] = dtype_name(target_dtype)
    parts = export_key_parts(model, options)
    key = key_of_parts(parts)
    if filename is None:
        folder = model_name(model) + (f"-{quantization.name}" if quantization else "")
        folder += f"-static{max_length}" if static else ""
        folder += "-gqa" if gqa else ""
        folder += "-plain" if plain else ""
        filename = os.path.join(cache_dir(), "onnx", f"{folder}-{key}", "model.onnx")
    filename = check_file_destination(filename)
    io_layout = contract.STATIC_LAYOUT if static else (contract.GQA_LAYOUT if gqa else contract.DIAG_LAYOUT)
    names = (
        io_layout.input_names(layout.num_layers, with_position_ids, with_logits_to_keep),
        io_layout.output_names(layout.num_layers),
    )
    if not force and is_cached(filename, key):
        return _reuse(model, filename, key, verify, verbose, names)

    was_training = model.training
    model.eval()
    try:
        source = None
        dummy_inputs = None
        if quantization is None:
            timings = ExportTimings()
            trace = TraceOptions(
                opset=opset, exporter=exporter, fuse=fuse, verbose=verbose, attention=attention,
                generation_config=options["generation_config"], plain=plain,
                metadata=dtype_metadata(target_dtype, source_dtype),
            )  # fmt: skip
            if static:
                done = _export_static(model, filename, layout, max_length, trace, timings)
            else:
                done = _export(model, filename, layout, trace, timings)
            dummy_inputs, extra_files, patches = done.inputs, done.extra_files, done.patches
            fusions = dict(timings.fusions)
        else:
            float_export = export_causal_lm(
                model, None, verify=False, force=force, opset=opset, verbose=verbose,
                exporter=exporter, fuse=fuse, cache=cache, max_length=max_length,
                attention=attention, layout="plain" if plain else "diag", dtype=target_dtype,
            )  # fmt: skip
            source = float_export.filename
            timings = float_export.timings
            begin = time.perf_counter()
            written = quantize_file(source, filename, quantization)
            timings.quantize = time.perf_counter() - begin
            if verbose:
                print(f"[export_causal_lm] {quantization.name}: {timings.quantize:.1f}s -> {filename}")
            extra_files = [os.path.basename(w) for w in written[1:]]
            patches, fusions = float_export.patches, float_export.fusions
        validation = None
        begin = time.perf_counter()
        if verify and runs_on_cpu(filename):
            validation = validate_causal_lm(
                model, filename, dummy_inputs=dummy_inputs, verbose=verbose
            )
        validation_time = time.perf_counter() - begin
    finally:
        model.train(was_training)
    # the sidecar last: a model that failed validation is never reused
    write_sidecar(
        filename,
        {
            "key": key,
            "key_parts": parts,
            "files": extra_files,
            "input_names": names[0],
            "output_names": names[1],
            "timings": timings.as_dict(),
            "fusions": fusions,
            "patches": patches,
            "source": source,
            "validation": _validation_entry(validation),
        },
    )
    return ExportResult(
        filename=filename,
        key=key,
        cached=False,
        input_names=names[0],
        output_names=names[1],
        timings=timings,
        validation=validation,
        validation_time=validation_time,
        patches=patches,
        fusions=fusions,
        quantization=quantization,
        source=source,
    )


__all__ = ["DEFAULT_OPSET", "ExportResult", "export_causal_lm", "generation_config_json"]
