"""The plan of an export, made before anything is traced: the options checked, the key
that names the export in the cache, the file, and the names of its inputs and outputs.

:func:`plan_export` is the first stage of :func:`diag.export_causal_lm`; the export is
reused when a file with the plan's key exists, built otherwise.

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> options = ExportOptions(cache="static", max_length=64)
    >>> plan = plan_export(model, "/tmp/llama/model.onnx", options)
    >>> plan.trace.opset, plan.key_options["cache"], plan.output_names[:2]
    (24, 'static', ['logits', 'present.0.key'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from diag import contract
from diag.export.plan.dtype import dtype_metadata, dtype_name, model_dtype
from diag.export.plan.export_key import cache_dir, export_key_parts, key_of_parts
from diag.export.plan.export_options import EXPORT_DEFAULTS, ExportOptions
from diag.export.plan.generation_config import generation_config_json
from diag.export.plan.model import (
    check_causal_lm,
    model_name,
    takes_logits_to_keep,
    takes_position_ids,
)
from diag.export.plan.option_checks import (
    STATIC_OPSET,
    check_attention,
    check_exporter,
    check_max_length,
    check_opset,
)
from diag.export.plan.plain_layout import check_layout
from diag.export.plan.quantize_options import QuantizeOptions
from diag.export.plan.trace_options import TraceOptions
from diag.helpers.atomic_write import check_file_destination
from diag.models.cache_layout import CacheLayout, cache_layout

#: the opset of :func:`diag.export_causal_lm`: ``Attention`` (grouped-query heads and
#: the cache in one op), ``RMSNormalization`` and ``RotaryEmbedding`` exist from 23 on
DEFAULT_OPSET = 23

#: options that came after the first exports, with the value those exports had: an
#: option enters the key only when it differs from it, so that the key of an export
#: that does not use the option stays what it was before the option existed
_LATER_OPTIONS: dict[str, Any] = {
    "logits_to_keep": False,
    "quantize": None,
    "cache": "dynamic",
    "max_length": None,
    "attention": "onnx",
    "layout": "diag",
    "dtype": None,
}


@dataclass(frozen=True)
class ExportPlan:
    """What :func:`diag.export_causal_lm` is about to make, decided from the model and
    the options alone."""

    filename: str
    #: 16 hexadecimal digits, the hash of :attr:`key_parts`
    key: str
    #: everything the key hashes, readable (stored in the sidecar)
    key_parts: dict[str, Any]
    #: the export options the key covers (a part of :attr:`key_parts`)
    key_options: dict[str, Any]
    input_names: list[str]
    output_names: list[str]
    #: the model's cache: layers, heads, head size
    layout: CacheLayout
    #: how the float export traces the model
    trace: TraceOptions
    quantization: QuantizeOptions | None
    #: the positions of each buffer of a static cache, None for a growing one
    max_length: int | None


def _key_options(base: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``base`` and the options of ``later`` that differ from their
    :data:`_LATER_OPTIONS` value."""
    return {**base, **{k: v for k, v in later.items() if v != _LATER_OPTIONS[k]}}


def _folder_name(
    model: torch.nn.Module, key: str, later: dict[str, Any], quantization: QuantizeOptions | None
) -> str:
    """``<model-name>[-int4][-static<N>][-gqa][-plain]-<key>``: the folder of a
    default destination, readable among the others of the cache."""
    name = model_name(model) + (f"-{quantization.name}" if quantization else "")
    name += f"-static{later['max_length']}" if later["max_length"] is not None else ""
    name += "-gqa" if later["attention"] == "gqa" else ""
    name += "-plain" if later["layout"] == "plain" else ""
    return f"{name}-{key}"


def plan_export(
    model: torch.nn.Module,
    filename: str | os.PathLike | None = None,
    options: ExportOptions = EXPORT_DEFAULTS,
    *,
    source_dtype: torch.dtype | None = None,
) -> ExportPlan:
    """Checks the ``options`` of :func:`diag.export_causal_lm` and plans the export; an
    unsupported model or option fails here, before anything is hashed or traced.
    ``model`` is already in the export's dtype (``options.dtype`` is not read here);
    ``source_dtype``: the dtype of the model the user gave when
    :mod:`diag.export.plan.dtype` converted it."""
    opset, verbose, exporter, fuse = options.opset, options.verbose, options.exporter, options.fuse
    cache, attention, layout = options.cache, options.attention, options.layout
    check_causal_lm(model)
    check_exporter(exporter)
    check_opset(opset)
    quantization = QuantizeOptions.parse(options.quantize)
    max_length = check_max_length(cache, options.max_length)
    static = max_length is not None
    gqa = check_attention(attention) == "gqa"
    plain = check_layout(layout, cache) == "plain"
    if gqa and not fuse:
        raise ValueError("attention='gqa' rewrites the fused attention: it needs fuse=True.")
    # the cache's shapes come from the model's own cache, not from config attributes
    # that some architectures do not use (multi-query falcon, latent attention...)
    cache_shapes = cache_layout(model)
    if opset is None:
        opset = STATIC_OPSET if static else DEFAULT_OPSET
    # the plain layout takes what other tools' loops feed: no position ids (a loop
    # without them lets the model count positions from the cache, as model.generate
    # does on a batch without padding)
    with_position_ids = takes_position_ids(model) and not plain
    with_logits_to_keep = takes_logits_to_keep(model) and not plain
    generation_config = generation_config_json(model)
    target = model_dtype(model)
    later = {
        "logits_to_keep": with_logits_to_keep,
        "quantize": quantization.as_dict() if quantization else None,
        "cache": cache,
        "max_length": max_length,
        "attention": attention,
        "layout": layout,
        # the file's dtype when it is not the model's: the keys of exports in the
        # model's own dtype stay what they were
        "dtype": dtype_name(target) if source_dtype not in (None, target) else None,
    }
    key_options = _key_options(
        {
            "exporter": exporter,
            "opset": opset,
            "with_position_ids": with_position_ids,
            "fuse": bool(fuse),
            # written in the file's metadata: another eos or pad needs another file
            "generation_config": generation_config,
        },
        later,
    )
    parts = export_key_parts(model, key_options)
    key = key_of_parts(parts)
    if filename is None:
        folder = _folder_name(model, key, later, quantization)
        filename = os.path.join(cache_dir(), "onnx", folder, "model.onnx")
    if static:
        io_layout = contract.STATIC_LAYOUT
    else:
        io_layout = contract.GQA_LAYOUT if gqa else contract.DIAG_LAYOUT
    trace = TraceOptions(
        opset=opset, exporter=exporter, fuse=fuse, verbose=verbose, attention=attention,
        generation_config=generation_config, plain=plain,
        metadata=dtype_metadata(target, source_dtype or target),
    )  # fmt: skip
    return ExportPlan(
        filename=check_file_destination(filename),
        key=key,
        key_parts=parts,
        key_options=key_options,
        input_names=io_layout.input_names(
            cache_shapes.num_layers, with_position_ids, with_logits_to_keep
        ),
        output_names=io_layout.output_names(cache_shapes.num_layers),
        layout=cache_shapes,
        trace=trace,
        quantization=quantization,
        max_length=max_length,
    )


__all__ = ["DEFAULT_OPSET", "ExportPlan", "plan_export"]
