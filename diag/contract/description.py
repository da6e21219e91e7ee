"""Everything the contract knows about a model before anything runs it, read once:
the graph files found, the layout detected (then ``layout=`` applied), the contract
read, the generation defaults (side files, else metadata), the static cache's length
and, for a prefill + decode pair, the prefill graph's outputs checked.
:func:`diag.ort.open.open_ort_backend` asks for it, then makes the sessions.

A path is read from its graph files without their weights (the files' layout is
found from the same reading); a session given is read from its inputs, outputs and
metadata only (no side files, no operators).

Example::

    description = describe_model("exported", layout={"head_dim": 64})
    description.layout.name, description.contract.num_layers, description.paths
    # ('diag', 30, ('exported/model.onnx',))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import onnx

from diag.contract.detect import detect_layout, find_model
from diag.contract.graph_view import GraphView
from diag.contract.layout import Layout
from diag.contract.metadata import metadata_generation_config, metadata_static_cache
from diag.contract.read import ContractInfo, contract_error, read_contract

#: what ``layout=`` takes: a Layout (replaces the detected one), a mapping (fields of
#: the detected one overridden), None (detected)
LayoutArg = Layout | Mapping[str, Any] | None


@dataclass(frozen=True)
class ModelDescription:
    """A decoder as the contract reads it, ready for an engine to open."""

    #: what it takes and returns (its ``layout`` the one detected, overrides applied)
    contract: ContractInfo
    #: the graph files in run order (prefill then decode for a pair); empty when the
    #: model was given in memory
    paths: tuple[str, ...] = ()
    #: the graph given in memory (a ModelProto, an onnx_ir.Model serialized), else None
    graph: onnx.ModelProto | None = None
    #: the decoding defaults: the side files', else the metadata's, else None
    generation_defaults: dict[str, Any] | None = None
    #: the positions of a static cache's buffers; None for a cache that grows
    max_length: int | None = None

    @property
    def layout(self) -> Layout:
        """The layout the model was read as."""
        return self.contract.layout

    @property
    def source(self) -> Any:
        """The graph's file (the decode graph of a pair) or the ModelProto; None for a
        session."""
        return self.paths[-1] if self.paths else self.graph


def static_max_length(view: Any) -> int | None:
    """The positions of a static export's buffers: its metadata, else the static third
    dimension of its first cache input; None when the model has neither. ``view``: a
    session or a graph's view (:mod:`diag.contract.graph_view`)."""
    entry = metadata_static_cache(view)
    if entry and isinstance(entry.get("max_length"), int):
        return entry["max_length"]
    for i in view.get_inputs():
        if len(i.shape) == 4 and isinstance(i.shape[2], int) and i.name != "input_ids":
            return int(i.shape[2])
    return None


def _check_prefill(prefill: Any, contract: ContractInfo) -> None:
    """The prefill graph of a pair returns the cache the decode graph takes."""
    layout = contract.layout
    wanted = layout.prefill_output_names(contract.num_layers)
    produced = {o.name for o in prefill.get_outputs()}
    missing = [n for n in wanted if n not in produced]
    if missing:
        raise contract_error(
            [f"the prefill graph lacks the outputs {missing[:3]} ({len(missing)} in all)"],
            layout,
        )


def _max_length(view: Any, layout: Layout) -> int | None:
    if not layout.is_static:
        return None
    max_length = layout.max_length or static_max_length(view)
    if max_length is None:
        raise ValueError(
            f"{layout.name} layout: the cache inputs have no static length and the "
            "metadata no max_length; export with export_causal_lm(model, cache='static', "
            "max_length=N)."
        )
    return max_length


def describe_model(model: Any, layout: LayoutArg = None) -> ModelDescription:
    """What the contract reads of ``model``: a folder (onnxruntime-genai's builder output,
    transformers' exporter's ``save_pretrained``, optimum-onnx...), an ``.onnx`` file, an
    ``onnx.ModelProto`` / ``onnx_ir.Model`` or an ``onnxruntime.InferenceSession``;
    ``layout`` as in :func:`~diag.contract.detect.find_model`.

    Raises a :class:`~diag.contract.read.ContractError` saying why when the model
    cannot be driven, a TypeError for anything else than the above.
    """
    prefill = None
    paths: tuple[str, ...] = ()
    graph = None
    defaults = None
    if isinstance(model, (str, os.PathLike)):
        found = find_model(model, layout)
        found_layout, paths, defaults = found.layout, found.paths, found.generation_defaults or None
        view = found.graphs[-1]
        prefill = found.graphs[0] if len(found.graphs) == 2 else None
    else:
        if type(model).__module__.startswith("onnx_ir"):
            import onnx_ir as ir

            model = ir.serde.serialize_model(model)
        if isinstance(model, onnx.ModelProto):
            graph, view = model, GraphView(model)
        elif all(hasattr(model, a) for a in ("get_inputs", "get_outputs", "get_modelmeta")):
            view = model  # a session: its names and metadata only
        else:
            raise TypeError(
                "model must be a folder or a path to an .onnx file, an onnx.ModelProto, an "
                "onnx_ir.Model or an onnxruntime.InferenceSession, got "
                f"{type(model).__name__}."
            )
        found_layout = detect_layout(model, layout)
    contract = read_contract(view, layout=found_layout)
    if prefill is not None:
        _check_prefill(prefill, contract)
    return ModelDescription(
        contract,
        paths,
        graph,
        defaults or metadata_generation_config(view),
        _max_length(view, found_layout),
    )


__all__ = ["LayoutArg", "ModelDescription", "describe_model", "static_max_length"]
