"""Exports a torch model to ONNX: :func:`to_onnx`.

The steps, each timed (see :class:`ExportTimings`):

1. ``torch.export``: :func:`torch.export.export` (non-strict) captures the graph with
   the given dynamic shapes;
2. ``translate``: :func:`torch.onnx.export` decomposes it to core ATen ops and
   translates it to ONNX;
3. ``optimize``: :func:`diag.export.make.weight_transpose.fold_weight_transposes` (no
   weight is transposed at run time, a tied weight is stored once), then the onnxscript
   optimizer (:func:`diag.export.make.optimize.optimize_model`: constant folding, rewrite
   rules, dead code, common subexpressions...), and with ``fuse=True`` the decoder
   fusions of :func:`diag.export.make.rewrite.fuse_decoder` (RMSNorm, rotary, attention with
   its cache, packed projections: opset >= 23 for the first three);
4. ``save``: :func:`diag.export.make.save.save_model_atomic` (weights in a ``.data`` file
   next to the model when they weigh more than 100 MB).

A model of transformers with a cache needs :func:`diag.export.torch_export_patches`
around the call (``export_causal_lm`` does it for you).

Example::

    >>> import torch
    >>> model = torch.nn.Linear(4, 3)
    >>> x = torch.rand(2, 4)
    >>> onx = to_onnx(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},),
    ...               input_names=["x"], output_names=["y"])
    >>> [i.name for i in onx.graph.input], [o.name for o in onx.graph.output]
    (['x'], ['y'])
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx_ir as ir
import torch

from diag.export.make.optimize import optimize_model
from diag.export.make.rename import rename_io
from diag.export.make.rewrite import fuse_decoder
from diag.export.make.save import save_model_atomic
from diag.export.make.weight_transpose import fold_weight_transposes
from diag.export.plan.causal_lm_names import cache_in, causal_lm_names, check_exportable
from diag.export.plan.option_checks import check_exporter, check_opset
from diag.helpers.atomic_write import check_file_destination


@dataclass
class ExportTimings:
    """Seconds spent in each step of an export."""

    torch_export: float = 0.0
    translate: float = 0.0
    optimize: float = 0.0
    save: float = 0.0
    #: the weights quantized (:func:`diag.export.make.quantize.quantize_file`), saved included
    quantize: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: how many times each fusion of :func:`diag.export.make.rewrite.fuse_decoder` fired
    fusions: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.torch_export + self.translate + self.optimize + self.save + self.quantize

    def as_dict(self) -> dict[str, float]:
        return {
            "torch.export": self.torch_export,
            "translate": self.translate,
            "optimize": self.optimize,
            "save": self.save,
            "quantize": self.quantize,
            "total": self.total,
        }


@contextlib.contextmanager
def _quiet(verbose: int) -> Iterator[None]:
    """Silences the exporter's progress lines and known harmless warnings."""
    # the exporter's registry logs a line per torchvision op when torchvision is not
    # installed ("Skipping torchvision::nms"): no causal LM uses them
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    with warnings.catch_warnings():
        if verbose < 2:
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            registry.setLevel(logging.ERROR)
        try:
            yield
        finally:
            registry.setLevel(level)


def _check_no_complex(program: torch.export.ExportedProgram, model: torch.nn.Module) -> None:
    """ONNX has no complex type: a graph computing with complex numbers (rotary
    embeddings written with ``torch.polar`` / ``view_as_complex``, as deepseek_v2's)
    fails deep in the translation with a message about decompositions. Say it here,
    naming the first complex value and the module that makes it."""
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and value.is_complex():
            stack = node.meta.get("nn_module_stack") or {}
            where = list(stack.values())[-1][0] if stack else "the model"
            raise TypeError(
                f"{type(model).__name__} computes with complex numbers ({node.target} gives "
                f"a {value.dtype} tensor in {where!r}): ONNX has no complex type, so the "
                "graph cannot be exported. Rotary embeddings written with torch.polar / "
                "view_as_complex do this; a real-valued rotation (cos / sin) exports."
            )


def export_to_ir(
    model: torch.nn.Module,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    dynamic_shapes: Any = None,
    exporter: str = "onnx-dynamo",
    opset: int | None = None,
    optimize: bool = True,
    verbose: int = 0,
    timings: ExportTimings | None = None,
    fuse: bool = False,
    custom_translation_table: Mapping[Any, Any] | None = None,
) -> ir.Model:
    """Steps 1 to 3 of :func:`to_onnx`: returns the :class:`onnx_ir.Model`, unsaved;
    ``custom_translation_table`` translates custom ops (``torch.onnx.export``'s)."""
    check_exporter(exporter)
    check_opset(opset)
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple of positional inputs, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict of keyword inputs, got {type(kwargs).__name__}")
    timings = timings if timings is not None else ExportTimings()
    kwargs = dict(kwargs or {})
    with _quiet(verbose):
        begin = time.perf_counter()
        with torch.no_grad():
            program = torch.export.export(
                model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes, strict=False
            )
        timings.torch_export = time.perf_counter() - begin
        if verbose:
            print(f"[to_onnx] torch.export: {timings.torch_export:.1f}s")
        _check_no_complex(program, model)

        begin = time.perf_counter()
        onnx_program = torch.onnx.export(
            program,
            args,
            kwargs=kwargs,
            # given again so that the exporter names the dynamic dims after the Dims
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            opset_version=opset,
            optimize=False,
            verbose=verbose > 1,
            custom_translation_table=dict(custom_translation_table or {}) or None,
        )
        timings.translate = time.perf_counter() - begin
        if verbose:
            print(f"[to_onnx] translation: {timings.translate:.1f}s")

        begin = time.perf_counter()
        model_ir: ir.Model = onnx_program.model
        if optimize:
            # before the optimizer: it would fold the transposition of a small tied
            # weight into a second copy of it
            timings.notes.extend(fold_weight_transposes(model_ir))
            optimize_model(model_ir)
            timings.notes.extend(fold_weight_transposes(model_ir))
            if fuse:
                timings.fusions = fuse_decoder(model_ir)
        timings.optimize = time.perf_counter() - begin
        if verbose:
            tied = [n for n in timings.notes if "tied" in n]
            print(
                f"[to_onnx] optimisation: {timings.optimize:.1f}s, "
                f"{len(timings.notes) - len(tied)} weights pre-transposed, "
                f"{len(tied)} tied weights read by Gemm"
                + (f", fusions {timings.fusions}" if fuse else "")
            )
    return model_ir


def to_onnx(
    model: torch.nn.Module,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    dynamic_shapes: Any = None,
    filename: str | os.PathLike | None = None,
    exporter: str = "onnx-dynamo",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int | None = None,
    optimize: bool = True,
    verbose: int = 0,
    dim_names: Mapping[str, str] | None = None,
    external_data: bool | None = None,
    timings: ExportTimings | None = None,
    fuse: bool = False,
) -> onnx.ModelProto:
    """Exports ``model`` to ONNX and writes it to ``filename`` (atomically).

    :param model: the torch model
    :param args: positional inputs
    :param kwargs: keyword inputs
    :param dynamic_shapes: as for :func:`torch.export.export`
    :param filename: where to write the model; None writes nothing
    :param exporter: ``"onnx-dynamo"`` (:func:`torch.onnx.export` with ``dynamo=True``)
    :param input_names: new names of the graph inputs, in order (default: the
        exporter's, from the flattened arguments; for a causal LM given its cache in
        ``kwargs``, the names of diag's contract, :mod:`diag.export.plan.causal_lm_names`,
        so that :func:`diag.onnx_generate` drives the file)
    :param output_names: new names of the graph outputs, in order (default: the
        exporter's; ``logits`` and ``present.{i}.key/value`` for a causal LM with its cache)
    :param opset: ONNX opset, None for the exporter's default
    :param optimize: runs the onnxscript optimizer and removes runtime
        transpositions of weights
    :param verbose: prints the steps and their durations
    :param dim_names: renames symbolic dimensions of inputs and outputs
    :param external_data: weights in ``<filename>.data``: True, False, or None for
        "when they weigh more than 100 MB"
    :param timings: filled with the duration of each step when given
    :param fuse: with ``optimize``, fuses the patterns of a transformers decoder
        (:func:`diag.export.make.rewrite.fuse_decoder`; needs opset >= 23 for most)
    :return: the :class:`onnx.ModelProto`; when the weights were written as external
        data, the proto references them (load with :func:`onnx.load` to get them)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"to_onnx exports a torch.nn.Module, got {type(model).__name__}; load a model "
            "first (diag.load_pretrained(name), or diag.get_untrained_model_with_inputs(arch))."
        )
    if filename is not None:
        check_file_destination(filename)
    timings = timings if timings is not None else ExportTimings()
    given = input_names is not None or output_names is not None
    named_by_contract = not given and cache_in(kwargs) is not None
    if named_by_contract and getattr(model, "config", None) is not None:
        # a transformers causal LM with its cache: refused before tracing when diag
        # cannot export that cache, with export_causal_lm's reason
        check_exportable(model)
    model_ir = export_to_ir(
        model,
        args,
        kwargs,
        dynamic_shapes,
        exporter=exporter,
        opset=opset,
        optimize=optimize,
        verbose=verbose,
        timings=timings,
        fuse=fuse,
    )
    if named_by_contract:
        graph = model_ir.graph
        names = causal_lm_names(
            kwargs or {}, [v.name for v in graph.inputs], [v.name for v in graph.outputs]
        )
        input_names, output_names = names or (None, None)
    rename_io(model_ir, input_names, output_names, dims=dim_names)
    begin = time.perf_counter()
    if filename is None:
        proto = ir.serde.serialize_model(model_ir)
    else:
        written = save_model_atomic(model_ir, filename, external_data=external_data)
        proto = onnx.load(os.fspath(filename), load_external_data=len(written) == 1)
    timings.save = time.perf_counter() - begin
    if verbose:
        print(f"[to_onnx] save: {timings.save:.1f}s -> {filename}")
    return proto
