"""Exports a causal LM of transformers in one call: :func:`export_causal_lm`.

It builds the dummy inputs and dynamic shapes
(:func:`diag.models.make_dummy_inputs`), exports under
:func:`diag.export.torch_export_patches`, names inputs and outputs after the
export contract (:mod:`diag.contract`), writes the model atomically, checks it
against torch on several input sets (:func:`diag.export.validate.validate_causal_lm`)
and stores a key in a sidecar so that the next call with the same model reuses the
file.

Example::

    >>> import diag
    >>> model, tokenizer = diag.load_pretrained("smollm2-135m-instruct")  # doctest: +SKIP
    >>> result = diag.export_causal_lm(model)  # doctest: +SKIP
    >>> result.filename, result.cached, result.validation.max_abs  # doctest: +SKIP
    ('~/.cache/diag/onnx/SmolLM2-135M-Instruct-3f1c.../model.onnx', False, 2.9e-05)
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir
import torch

from diag import contract
from diag.export.export_cache import (
    cache_dir,
    export_key_parts,
    is_cached,
    key_of_parts,
    read_sidecar,
    write_sidecar,
)
from diag.export.onnx_export import ExportTimings, _check_exporter, export_to_ir
from diag.export.patches import torch_export_patches
from diag.export.rename import rename_io
from diag.export.save import save_model_atomic
from diag.export.validate import ValidationReport, takes_position_ids, validate_causal_lm
from diag.models.cache_layout import CacheLayout, cache_layout

#: the opset of :func:`export_causal_lm`: ``Attention`` (grouped-query heads and the
#: cache in one op), ``RMSNormalization`` and ``RotaryEmbedding`` exist from 23 on
DEFAULT_OPSET = 23


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

    def __fspath__(self) -> str:
        return self.filename

    def __str__(self) -> str:
        return self.filename


def _model_name(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    name = (
        getattr(config, "_name_or_path", "")
        or getattr(config, "model_type", "")
        or type(model).__name__
    )
    name = os.path.basename(os.path.normpath(str(name))) or type(model).__name__
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _check_model(model: Any) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"export_causal_lm expects a torch causal LM (e.g. AutoModelForCausalLM), got "
            f"{type(model).__name__}; load one with diag.load_pretrained(name)."
        )
    if getattr(model, "config", None) is None:
        raise TypeError(
            f"{type(model).__name__} has no `config`: export_causal_lm needs a model of "
            "transformers (it rebuilds the cache from its config); use diag.to_onnx for "
            "other models."
        )
    from diag.compat.transformers_api import cache_argument, forward_parameters

    if cache_argument(model) is None or "input_ids" not in forward_parameters(model):
        raise TypeError(
            f"{type(model).__name__}.forward does not take input_ids and a key/value cache: "
            "export_causal_lm exports decoder-only causal LMs with a key/value cache."
        )


def generation_config_json(model: torch.nn.Module) -> str | None:
    """The model's ``generation_config`` as compact JSON, only the fields it sets
    (``to_diff_dict``: ``GenerationConfig(**json.loads(text))`` gives it back), or None
    when the model has none.

    Example::

        >>> from diag.models import get_untrained_model_with_inputs
        >>> model = get_untrained_model_with_inputs("llama")["model"]
        >>> json.loads(generation_config_json(model))["eos_token_id"]
        2
    """
    config = getattr(model, "generation_config", None)
    if config is None or not hasattr(config, "to_json_string"):
        return None
    # to_json_string turns what json cannot write (sets, nested configs) into plain values
    content = json.loads(config.to_json_string(use_diff=True))
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def _write_generation_config(model_ir: ir.Model, text: str | None) -> None:
    """Stores the generation config (:func:`generation_config_json`) in the model's
    metadata: onnx_generate reads it as its defaults (eos, pad, sampling), as
    model.generate reads model.generation_config."""
    if text is not None:
        model_ir.metadata_props[contract.GENERATION_CONFIG_METADATA] = text


def _fix_mask_dim(model_ir: ir.Model) -> None:
    """Names the attention mask's second dimension after the present length."""
    inputs = {v.name: v for v in model_ir.graph.inputs}
    outputs = {v.name: v for v in model_ir.graph.outputs}
    mask = inputs.get(contract.ATTENTION_MASK)
    present = outputs.get(contract.present_key_name(0))
    if mask is None or present is None or mask.shape is None or present.shape is None:
        return
    total = present.shape[2]
    if isinstance(total, ir.SymbolicDim) and isinstance(mask.shape[1], ir.SymbolicDim):
        mask.shape = ir.Shape([mask.shape[0], total])


def _export(
    model: torch.nn.Module,
    filename: str,
    opset: int | None,
    verbose: int,
    timings: ExportTimings,
    exporter: str,
    fuse: bool,
    generation_config: str | None,
    layout: CacheLayout,
) -> tuple[dict[str, Any], list[str], list[str], list[str], list[str]]:
    from diag.models.inputs import make_dummy_inputs

    with_position_ids = takes_position_ids(model)
    inputs, dynamic_shapes = make_dummy_inputs(
        model, with_position_ids=with_position_ids, layout=layout
    )
    device = next(model.parameters()).device
    if device.type != "cpu":
        from diag.helpers.cache_helper import is_cache, map_cache_tensors

        inputs = {
            k: (map_cache_tensors(v, lambda t, _: t.to(device)) if is_cache(v) else v.to(device))
            for k, v in inputs.items()
        }
    input_names = contract.DIAG_LAYOUT.input_names(layout.num_layers, with_position_ids=with_position_ids)
    output_names = contract.DIAG_LAYOUT.output_names(layout.num_layers)
    with torch_export_patches(verbose=verbose) as report:
        model_ir = export_to_ir(
            model,
            (),
            kwargs=inputs,
            dynamic_shapes=dynamic_shapes,
            exporter=exporter,
            opset=opset,
            verbose=verbose,
            timings=timings,
            fuse=fuse,
        )
    got_in = [v.name for v in model_ir.graph.inputs]
    got_out = [v.name for v in model_ir.graph.outputs]
    if len(got_in) != len(input_names) or len(got_out) != len(output_names):
        raise RuntimeError(
            f"the exported graph of {type(model).__name__} has inputs {got_in} and outputs "
            f"{got_out}, which do not map onto the export contract {input_names} -> "
            f"{output_names}; the model's cache layout is not supported yet."
        )
    rename_io(model_ir, input_names, output_names)
    _fix_mask_dim(model_ir)
    _write_generation_config(model_ir, generation_config)
    begin = time.perf_counter()
    written = save_model_atomic(model_ir, filename)
    timings.save = time.perf_counter() - begin
    if verbose:
        print(f"[export_causal_lm] saved {written} in {timings.save:.1f}s")
    patches = report.applied + report.skipped
    return inputs, input_names, output_names, [os.path.basename(w) for w in written[1:]], patches


def export_causal_lm(
    model: torch.nn.Module,
    filename: str | os.PathLike | None = None,
    verify: bool = True,
    force: bool = False,
    opset: int | None = None,
    verbose: int = 0,
    exporter: str = "onnx-dynamo",
    fuse: bool = True,
) -> ExportResult:
    """Exports a causal LM of transformers to ONNX, following the export contract.

    :param model: a loaded causal LM (``AutoModelForCausalLM``), in eval mode
    :param filename: the ``.onnx`` file to write; None: under
        ``$DIAG_CACHE/onnx/<model-name>-<key>/model.onnx``
    :param verify: runs ONNX Runtime and torch on the dummy inputs and four other input
        sets (empty cache, batch 1, left padding) and raises
        :class:`~diag.export.validate.ExportValidationError` above tolerance
    :param force: exports again even when a cached export with the same key exists
    :param opset: ONNX opset (None: :data:`DEFAULT_OPSET`, 23: the first with the
        ``Attention``, ``RMSNormalization`` and ``RotaryEmbedding`` ops)
    :param verbose: prints the patches, the steps and the validation table
    :param exporter: ``"onnx-dynamo"``
    :param fuse: rewrites the decoder's patterns into fused ops
        (:func:`diag.export.rewrite.fuse_decoder`): a decode step runs ~560 kernels
        instead of ~2,400 (SmolLM2); False keeps the exporter's graph
    :return: an :class:`ExportResult` (usable as a path)

    The model's ``generation_config`` goes into the file's metadata
    (:func:`generation_config_json`): :func:`diag.onnx_generate` then stops at the
    model's eos and pads with its pad token without being told.

    The key covers the model class and config, its generation config, a hash of the
    weights, the exporter, the opset and the versions of diag, torch, transformers,
    onnx, onnxscript and onnx-ir.
    """
    from diag.compat.versions import warn_if_transformers_untested

    warn_if_transformers_untested()  # once per process: a newer transformers may break it
    _check_model(model)
    _check_exporter(exporter)
    # the cache's shapes come from the model's own cache, not from config attributes
    # that some architectures do not use (multi-query falcon, latent attention...);
    # an unsupported cache fails here, before anything is hashed or traced
    layout = cache_layout(model)
    num_layers = layout.num_layers
    if opset is None:
        opset = DEFAULT_OPSET
    with_position_ids = takes_position_ids(model)
    options = {
        "exporter": exporter,
        "opset": opset,
        "with_position_ids": with_position_ids,
        "fuse": bool(fuse),
        # written in the file's metadata: another eos or pad needs another file
        "generation_config": generation_config_json(model),
    }
    parts = export_key_parts(model, options)
    key = key_of_parts(parts)
    if filename is None:
        filename = os.path.join(cache_dir(), "onnx", f"{_model_name(model)}-{key}", "model.onnx")
    filename = os.path.abspath(os.fspath(filename))

    if not force and is_cached(filename, key):
        side = read_sidecar(filename) or {}
        validation = None
        validation_time = 0.0
        if side.get("validation") is not None:
            validation = ValidationReport(
                atol=side["validation"]["atol"], rows=side["validation"]["rows"]
            )
        elif verify:
            # exported earlier with verify=False: validate now, once
            begin = time.perf_counter()
            validation = validate_causal_lm(model, filename, verbose=verbose)
            validation_time = time.perf_counter() - begin
            side["validation"] = {"atol": validation.atol, "rows": validation.rows}
            write_sidecar(filename, side)
        if verbose:
            print(f"[export_causal_lm] reusing {filename} (key {key})")
        return ExportResult(
            filename=filename,
            key=key,
            cached=True,
            input_names=contract.DIAG_LAYOUT.input_names(num_layers, with_position_ids),
            output_names=contract.DIAG_LAYOUT.output_names(num_layers),
            validation=validation,
            validation_time=validation_time,
            patches=side.get("patches", []),
            fusions=side.get("fusions") or {},
        )

    was_training = model.training
    model.eval()
    try:
        timings = ExportTimings()
        inputs, input_names, output_names, extra_files, patches = _export(
            model,
            filename,
            opset,
            verbose,
            timings,
            exporter,
            fuse,
            options["generation_config"],
            layout,
        )
        validation = None
        begin = time.perf_counter()
        if verify:
            validation = validate_causal_lm(model, filename, dummy_inputs=inputs, verbose=verbose)
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
            "input_names": input_names,
            "output_names": output_names,
            "timings": timings.as_dict(),
            "fusions": timings.fusions,
            "patches": patches,
            "validation": None
            if validation is None
            else {"atol": validation.atol, "rows": validation.rows},
        },
    )
    return ExportResult(
        filename=filename,
        key=key,
        cached=False,
        input_names=input_names,
        output_names=output_names,
        timings=timings,
        validation=validation,
        validation_time=validation_time,
        patches=patches,
        fusions=dict(timings.fusions),
    )
