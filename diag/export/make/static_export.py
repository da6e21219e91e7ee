"""The float export of a causal LM with a static cache, the ``cache="static"`` step of
:func:`diag.export_causal_lm`: :class:`~diag.export.make.static_cache.StaticStep` traced on
dummy buffers of ``max_length`` positions under :func:`diag.export.torch_export_patches`,
``diag::cache_write`` translated to ``TensorScatter`` (opset 24), the names of
:data:`diag.contract.STATIC_LAYOUT`, ``max_length`` and the generation config in the
metadata, the file saved atomically.

Example::

    result = diag.export_causal_lm(model, cache="static", max_length=2048)
    diag.onnx_generate(result, ids, max_new_tokens=100)  # an InPlaceCache backend, from the file
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch

from diag import contract
from diag.contract.feeds import static_mask, write_positions
from diag.export.make.decoder_export import DecoderExport, trace_and_save
from diag.export.make.logits_to_keep import add_logits_to_keep
from diag.export.make.onnx_export import ExportTimings
from diag.export.make.static_cache import TRANSLATION_TABLE, StaticStep
from diag.export.plan.model import takes_position_ids
from diag.export.plan.option_checks import STATIC_OPSET
from diag.export.plan.trace_options import TraceOptions
from diag.models.cache_layout import CacheLayout


def static_dummy_inputs(
    model: torch.nn.Module, layout: CacheLayout, max_length: int, with_position_ids: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inputs of one step of :class:`StaticStep` (``batch`` rows writing ``seq``
    positions after ``past``, in buffers of ``max_length``) and their dynamic shapes:
    ``batch`` and ``seq`` dynamic, ``max_length`` static."""
    from diag.models.inputs import _pick_dims

    static = set(layout.static_dims()) | {max_length}
    batch, seq, past = _pick_dims(None, None, None, static)
    generator = torch.Generator().manual_seed(0)
    pairs = layout.random_pairs(batch, max_length, generator=generator)
    mask = torch.zeros((batch, max_length), dtype=torch.int64)
    mask[:, : past + seq] = 1
    inputs: dict[str, Any] = {
        "input_ids": torch.randint(0, layout.vocab_size, (batch, seq), generator=generator),
        "attention_mask": mask,
    }
    if with_position_ids:
        inputs["position_ids"] = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    inputs["cache_position"] = torch.from_numpy(write_positions(past + seq, seq))
    inputs["past"] = [t for pair in pairs for t in pair]
    d_batch = torch.export.Dim(contract.DIM_BATCH, min=1, max=1024)
    d_seq = torch.export.Dim(contract.DIM_SEQ, min=1, max=max_length)
    shapes: dict[str, Any] = {"input_ids": {0: d_batch, 1: d_seq}, "attention_mask": {0: d_batch}}
    if with_position_ids:
        shapes["position_ids"] = {0: d_batch, 1: d_seq}
    shapes["cache_position"] = {0: d_seq}
    shapes["past"] = [{0: d_batch} for _ in inputs["past"]]
    return inputs, shapes


def export_static_decoder(
    model: torch.nn.Module,
    filename: str,
    layout: CacheLayout,
    max_length: int,
    options: TraceOptions,
    timings: ExportTimings,
) -> DecoderExport:
    """Exports ``model`` with a static cache of ``max_length`` positions to
    ``filename`` (:data:`diag.contract.STATIC_LAYOUT`); ``timings`` receives the
    duration of each step. ``options.opset`` below 24 (no ``TensorScatter``) is
    refused (None: 24). ``options.attention="gqa"``: ``GroupQueryAttention`` on the
    shared buffers (:mod:`diag.export.make.rewrite.group_query_attention_static`)."""
    opset = STATIC_OPSET if options.opset is None else options.opset
    if opset < STATIC_OPSET:
        raise ValueError(
            f"cache='static' writes the cache with TensorScatter, which needs opset >= "
            f"{STATIC_OPSET}; got opset={opset} (pass opset=None)."
        )
    with_position_ids = takes_position_ids(model)
    inputs, shapes = static_dummy_inputs(model, layout, max_length, with_position_ids)
    with_keep = add_logits_to_keep(model, inputs, shapes)
    names = contract.STATIC_LAYOUT
    input_names = names.input_names(
        layout.num_layers, with_position_ids=with_position_ids, with_logits_to_keep=with_keep
    )
    # the mask is [batch, max_length], not [batch, present length]: no dimension to fix
    done = trace_and_save(
        model, StaticStep(model), filename, inputs, shapes, input_names,
        names.output_names(layout.num_layers), dataclasses.replace(options, opset=opset), timings,
        metadata={contract.STATIC_CACHE_METADATA: json.dumps({"max_length": max_length})},
        fix_mask_dim=False, custom_translation_table=TRANSLATION_TABLE, max_length=max_length,
    )  # fmt: skip
    # the validation feeds the buffers by name
    dummy = dict(done.inputs)
    past = dummy.pop("past")
    for i, name in enumerate(contract.PAST.names(layout.num_layers)):
        dummy[name] = past[i]
    return dataclasses.replace(done, inputs=dummy)


def static_feeds(feeds: dict[str, Any], max_length: int) -> dict[str, Any]:
    """The numpy feeds of a dynamic step (``past`` positions of cache, a mask of
    ``past + seq``) as a static step takes them: the past written at the start of
    zero buffers of ``max_length`` positions, the mask padded with zeros, the write
    position ``past, ..., past + seq - 1``.

    >>> import numpy as np
    >>> f = static_feeds({"input_ids": np.zeros((1, 2), np.int64),
    ...                  "attention_mask": np.ones((1, 5), np.int64),
    ...                  "past_key_values.0.key": np.ones((1, 1, 3, 2), np.float32)}, 16)
    >>> f["attention_mask"].sum(), f["cache_position"].tolist(), f["past_key_values.0.key"].shape
    (np.int64(5), [3, 4], (1, 1, 16, 2))
    """
    import numpy as np

    mask = feeds[contract.ATTENTION_MASK]
    total, seq = mask.shape[1], feeds[contract.INPUT_IDS].shape[1]
    past = total - seq
    out = dict(feeds)
    out[contract.ATTENTION_MASK] = static_mask(mask, max_length)
    out[contract.CACHE_POSITION] = write_positions(total, seq)
    for name, value in feeds.items():
        if contract.PAST.parse(name) is not None:
            buffer = np.zeros(value.shape[:2] + (max_length,) + value.shape[3:], dtype=value.dtype)
            buffer[:, :, :past] = value
            out[name] = buffer
    return out


__all__ = [
    "export_static_decoder",
    "static_dummy_inputs",
    "static_feeds",
]
