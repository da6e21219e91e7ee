"""The float export of a causal LM, one step of :func:`diag.export_causal_lm`: traces
the model (checked by the plan, :mod:`diag.export.plan.model`) on dummy inputs under
:func:`diag.export.torch_export_patches`, names inputs and outputs after the export
contract (:mod:`diag.contract`), writes the generation config into the metadata and
saves the file atomically.

Example::

    plan = plan_export(model, "llama/model.onnx")  # diag.export.plan.export_plan
    done = export_decoder(model, plan.filename, plan.layout, plan.trace, ExportTimings())
    done.input_names[:3]  # ['input_ids', 'attention_mask', 'position_ids']
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir
import torch

from diag import contract
from diag.export.make.logits_to_keep import add_logits_to_keep
from diag.export.make.onnx_export import ExportTimings, export_to_ir
from diag.export.make.patches import torch_export_patches
from diag.export.make.rename import rename_io
from diag.export.make.save import save_model_atomic
from diag.export.plan.generation_config import write_generation_config
from diag.export.plan.model import takes_position_ids
from diag.export.plan.trace_options import TraceOptions
from diag.models.cache_layout import CacheLayout


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


@dataclass
class DecoderExport:
    """What :func:`export_decoder` wrote."""

    #: the dummy inputs the model was traced with (the validation checks them first)
    inputs: dict[str, Any]
    input_names: list[str]
    output_names: list[str]
    #: the files next to the model (its ``.data``), names relative to its folder
    extra_files: list[str]
    #: the patches applied or skipped
    patches: list[str] = field(default_factory=list)


def _on_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The trace's inputs moved to ``device``: tensors, caches, lists of tensors (the
    static export's buffers)."""
    from diag.helpers.cache_helper import is_cache, map_cache_tensors

    def move(v: Any) -> Any:
        if is_cache(v):
            return map_cache_tensors(v, lambda t, _: t.to(device))
        return [t.to(device) for t in v] if isinstance(v, list) else v.to(device)

    return {k: move(v) for k, v in inputs.items()}


def export_decoder(
    model: torch.nn.Module,
    filename: str,
    layout: CacheLayout,
    options: TraceOptions,
    timings: ExportTimings,
) -> DecoderExport:
    """Exports ``model`` (float, the weights as they are) to ``filename`` following
    the export contract; ``timings`` receives the duration of each step."""
    from diag.models.inputs import make_dummy_inputs

    with_position_ids = takes_position_ids(model) and not options.plain
    inputs, dynamic_shapes = make_dummy_inputs(
        model, with_position_ids=with_position_ids, layout=layout
    )
    # the graph computes only the logits of the positions it is given (a forward
    # without the argument: every position, and the file says so by lacking the input)
    plain = options.plain
    with_logits_to_keep = not plain and add_logits_to_keep(model, inputs, dynamic_shapes)
    input_names = contract.DIAG_LAYOUT.input_names(
        layout.num_layers,
        with_position_ids=with_position_ids,
        with_logits_to_keep=with_logits_to_keep,
    )
    output_names = contract.DIAG_LAYOUT.output_names(layout.num_layers)
    return trace_and_save(
        model, model, filename, inputs, dynamic_shapes, input_names, output_names, options, timings
    )


def trace_and_save(
    model: torch.nn.Module,
    module: torch.nn.Module,
    filename: str,
    inputs: dict[str, Any],
    dynamic_shapes: dict[str, Any],
    input_names: list[str],
    output_names: list[str],
    options: TraceOptions,
    timings: ExportTimings,
    *,
    metadata: dict[str, str] | None = None,
    fix_mask_dim: bool = True,
    custom_translation_table: dict[Any, Any] | None = None,
    max_length: int | None = None,
) -> DecoderExport:
    """Traces ``module`` (``model`` itself, or a wrapper of it such as the static
    export's step) on ``inputs`` under :func:`torch_export_patches`, translates it, then
    :func:`name_and_save`; the one path of the dynamic and the static exports.
    ``options.attention == "gqa"`` rewrites the fused attention into
    ``GroupQueryAttention`` (:mod:`diag.export.make.attention_kind`; on the static cache's
    buffers of ``max_length`` positions when given) and says so in the metadata."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        inputs = _on_device(inputs, device)
    metadata = {**(options.metadata or {}), **(metadata or {})}
    with torch_export_patches(verbose=options.verbose) as report:
        model_ir = export_to_ir(
            module,
            (),
            kwargs=inputs,
            dynamic_shapes=dynamic_shapes,
            exporter=options.exporter,
            opset=options.opset,
            verbose=options.verbose,
            timings=timings,
            fuse=options.fuse,
            custom_translation_table=custom_translation_table,
        )
    if options.attention == "gqa":
        from diag.export.make.attention_kind import gqa_metadata, to_group_query_attention

        timings.fusions["group_query_attention"] = to_group_query_attention(
            model_ir, model, max_length
        )
        metadata = {**(metadata or {}), **gqa_metadata()}
    written = name_and_save(
        model_ir, model, filename, input_names, output_names, options.generation_config, timings,
        options.verbose, metadata=metadata, fix_mask_dim=fix_mask_dim,
    )  # fmt: skip
    return DecoderExport(
        inputs=inputs,
        input_names=input_names,
        output_names=output_names,
        extra_files=[os.path.basename(w) for w in written[1:]],
        patches=report.applied + report.skipped,
    )


def name_and_save(
    model_ir: ir.Model,
    model: torch.nn.Module,
    filename: str,
    input_names: list[str],
    output_names: list[str],
    generation_config: str | None,
    timings: ExportTimings,
    verbose: int = 0,
    metadata: dict[str, str] | None = None,
    fix_mask_dim: bool = True,
) -> list[str]:
    """The last steps of an export, dynamic or static cache: names the graph's inputs
    and outputs after the layout (refused when they do not map), writes the generation
    config and ``metadata`` into the metadata, saves atomically; returns the files written."""
    got_in = [v.name for v in model_ir.graph.inputs]
    got_out = [v.name for v in model_ir.graph.outputs]
    if len(got_in) != len(input_names) or len(got_out) != len(output_names):
        raise RuntimeError(
            f"the exported graph of {type(model).__name__} has inputs {got_in} and outputs "
            f"{got_out}, which do not map onto the export contract {input_names} -> "
            f"{output_names}; the model's cache layout is not supported yet."
        )
    rename_io(model_ir, input_names, output_names)
    if fix_mask_dim:
        _fix_mask_dim(model_ir)
    write_generation_config(model_ir, generation_config)
    model_ir.metadata_props.update(metadata or {})
    begin = time.perf_counter()
    written = save_model_atomic(model_ir, filename)
    timings.save = time.perf_counter() - begin
    if verbose:
        print(f"[export_causal_lm] saved {written} in {timings.save:.1f}s")
    return written


__all__ = ["DecoderExport", "export_decoder", "name_and_save", "trace_and_save"]
