"""Which :class:`~diag.contract.layout.Layout` an ONNX decoder follows, found from its
graph and the side files next to it.

* a folder (or its ``.onnx`` file) with ``genai_config.json``: onnxruntime-genai's
  model builder (the names, the head size and the generation defaults from the config;
  ``GroupQueryAttention`` reads the lengths from the mask, so a padded batch is given
  right-padded, see :data:`~diag.contract.layout.PADDING_SIDES`);
* a folder with ``export.json``: transformers' exporter (``transformers.exporters``),
  a prefill graph and a decode graph;
* any other graph: the cache names read from its inputs and outputs (diag's own
  contract, optimum-onnx's decoder export and any graph naming its cache
  ``<prefix><layer><sep><key|keys>`` / ``...<value|values>``);
* a graph whose names say nothing of the cache (a plain ``torch.onnx.export(...,
  dynamo=True)`` of a transformers causal LM, ``diag.to_onnx`` given other inputs than
  a causal LM's, onnx-diagnostic's export): the cache read by position
  (:class:`~diag.contract.names.PositionalCacheNames`) when there are as many cache
  inputs as outputs after the logits, two per layer;
* diag's layout when nothing else fits (then :func:`~diag.contract.read.read_contract`
  says what differs, one line per kind of problem).

Example::

    >>> detect_layout_from_names(
    ...     ["input_ids", "input.past_key_values.layers.0.keys", "input.past_key_values.layers.0.values"],
    ...     ["logits", "output.past_key_values.layers.0.keys", "output.past_key_values.layers.0.values"],
    ... ).past
    CacheNames(template='input.past_key_values.layers.{layer}.{kind}', kinds=('keys', 'values'))
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from diag.contract import names as N
from diag.contract.files import load_onnx, read_json
from diag.contract.graph_view import GraphView
from diag.contract.layout import DIAG_LAYOUT, Layout
from diag.contract.metadata import STATIC_CACHE_METADATA, metadata_attention
from diag.contract.names import CacheNames, PositionalCacheNames
from diag.contract.read import ContractError

#: onnxruntime-genai's side file
GENAI_CONFIG = "genai_config.json"
#: transformers' exporter's side file
TRANSFORMERS_EXPORT = "export.json"
#: the words a cache name may end with, key first
_KINDS = (("key", "value"), ("keys", "values"))
# a cache name: anything, the layer's index, a separator, the kind
_CACHE_NAME = re.compile(
    r"^(?P<head>.*?)(?P<layer>\d+)(?P<tail>\D*?)(?P<kind>keys|values|key|value)$"
)
#: the inputs that are not the cache
_TOKENS = {N.INPUT_IDS, N.ATTENTION_MASK, N.POSITION_IDS, N.CACHE_POSITION, N.LOGITS_TO_KEEP}
#: onnx-diagnostic's cache inputs (its flattening of a DynamicCache of full layers)
_ONNX_DIAGNOSTIC = re.compile(r"past_key_values_(key|value)_\d+")
#: the exporter's name of a node's output (``linear_14``, ``cat_3``)
_EXPORTER_OUTPUT = re.compile(r"[a-z][a-z0-9_]*_\d+")
#: the exporter's name of a flattened argument's tensor (``cache_0``)
_FLAT_INPUT = re.compile(r"(?P<arg>[A-Za-z_][A-Za-z0-9_]*?)_(?P<i>0)")


@dataclass(frozen=True)
class FoundModel:
    """A model found on disk: its folder, its layout, the graph files in run order
    (one, or prefill then decode), the generation defaults of its side files, and the
    inputs, outputs and metadata of each graph (read once, when its layout was found)."""

    folder: str | None
    layout: Layout
    paths: tuple[str, ...]
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    graphs: tuple[GraphView, ...] = field(default=(), compare=False, repr=False)


def _cache_names(names: Iterable[str]) -> CacheNames | None:
    """The one template naming every cache tensor of ``names``, or None."""
    names = list(names)
    if not names:
        return None
    templates = set()
    kinds_seen = set()
    for name in names:
        m = _CACHE_NAME.match(name)
        if m is None:
            return None
        kind = m["kind"]
        pair = next(p for p in _KINDS if kind in p)
        kinds_seen.add(pair)
        templates.add(f"{m['head']}{{layer}}{m['tail']}{{kind}}")
    if len(templates) != 1 or len(kinds_seen) != 1:
        return None
    cache = CacheNames(templates.pop(), kinds_seen.pop())
    return cache if all(cache.parse(n) for n in names) else None


def _positional(
    inputs: list[str], outputs: list[str]
) -> tuple[str, PositionalCacheNames, PositionalCacheNames] | None:
    """``(logits, past, present)`` of a graph whose cache names say nothing (a plain
    ``torch.onnx.export(..., dynamo=True)`` of a transformers causal LM: inputs
    ``cache_0``... or ``past_key_values_key_0``..., outputs ``linear_14``, ``cat_3``...),
    read by position: the cache inputs after the token inputs, the logits the first
    output (or the one named ``logits``), then the cache outputs in the same order.
    None unless there are as many cache inputs as cache outputs, two per layer."""
    past = [n for n in inputs if n not in _TOKENS]
    logits = N.LOGITS if N.LOGITS in outputs else (outputs[0] if outputs else None)
    present = [n for n in outputs if n != logits]
    if logits is None or not past or len(past) != len(present) or len(past) % 2:
        return None
    # only the exporter's own names: names that say something else are not read by
    # position (read_contract then lists them)
    if not all(_EXPORTER_OUTPUT.fullmatch(n) for n in [*present, logits] if n != N.LOGITS):
        return None
    if past not in (_flattened(past), _onnx_diagnostic_names(len(past) // 2)):
        return None
    return logits, PositionalCacheNames(tuple(past)), PositionalCacheNames(tuple(present))


def _flattened(names: list[str]) -> list[str]:
    """The exporter's names of one flattened argument (``cache_0, cache_1...``), with
    the prefix of ``names[0]``."""
    m = _FLAT_INPUT.fullmatch(names[0])
    return [f"{m['arg']}_{i}" for i in range(len(names))] if m else []


def _onnx_diagnostic_names(num_layers: int) -> list[str]:
    return [f"past_key_values_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


def _positional_name(past: PositionalCacheNames) -> str:
    """Whose positional layout it is: onnx-diagnostic names the cache inputs
    ``past_key_values_key_{i}`` / ``past_key_values_value_{i}``."""
    if all(_ONNX_DIAGNOSTIC.fullmatch(n) for n in past.listed):
        return "onnx-diagnostic"
    return "torch.onnx"


def _with_overrides(layout: Layout, overrides: Layout | Mapping[str, Any] | None) -> Layout:
    if overrides is None:
        return layout
    if isinstance(overrides, Layout):
        return overrides
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"layout= takes a Layout or a dict of its fields ({{'head_dim': 64}}), not "
            f"{type(overrides).__name__}."
        )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Layout)}
    if unknown:
        raise ValueError(
            f"layout= has unknown fields {sorted(unknown)}; the fields of a Layout are "
            f"{[f.name for f in dataclasses.fields(Layout)]}."
        )
    return dataclasses.replace(layout, **overrides)


def detect_layout_from_names(
    inputs: Iterable[str], outputs: Iterable[str], *, name: str = "", **fields: Any
) -> Layout:
    """The layout the input and output names of one graph follow (diag's when the
    cache names fit no single template: :func:`read_contract` then lists what
    differs).

    >>> detect_layout_from_names(DIAG_LAYOUT.input_names(2), DIAG_LAYOUT.output_names(2)) == DIAG_LAYOUT
    True
    """
    inputs, outputs = list(inputs), list(outputs)
    past = _cache_names(n for n in inputs if n not in _TOKENS)
    present = _cache_names(n for n in outputs if n != N.LOGITS)
    logits = N.LOGITS
    if past is None or present is None or N.LOGITS not in outputs:
        positional = _positional(inputs, outputs)
        if positional is None or N.INPUT_IDS not in inputs:
            return dataclasses.replace(DIAG_LAYOUT, **fields)
        logits, past, present = positional
        name = name or _positional_name(past)
    if N.INPUT_IDS not in inputs:
        return dataclasses.replace(DIAG_LAYOUT, **fields)
    # a write position: past and present share buffers (diag's static cache layout)
    static = N.CACHE_POSITION in inputs
    diag_name = "diag-static" if static else "diag"
    layout = Layout(
        name=name or (diag_name if (past, present) == (N.PAST, N.PRESENT) else "graph"),
        input_ids=N.INPUT_IDS,
        attention_mask=N.ATTENTION_MASK if N.ATTENTION_MASK in inputs else None,
        position_ids=N.POSITION_IDS if N.POSITION_IDS in inputs else None,
        logits=logits,
        past=past,
        present=present,
        cache_position=N.CACHE_POSITION if static else None,
        # a graph without it (older diag exports, other tools) computes every position
        logits_to_keep=N.LOGITS_TO_KEEP if N.LOGITS_TO_KEEP in inputs else None,
    )
    if layout.attention_mask is None:
        layout = dataclasses.replace(layout, padding="none")
    layout = dataclasses.replace(layout, **fields)
    return DIAG_LAYOUT if layout == DIAG_LAYOUT else layout


def graph_op_types(model: onnx.ModelProto) -> set[str]:
    """The operator types of the main graph."""
    return {n.op_type for n in model.graph.node}


def _from_proto(model: onnx.ModelProto, **fields: Any) -> Layout:
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    layout = detect_layout_from_names(inputs, outputs, **fields)
    if layout.is_static and layout.max_length is None:
        # the buffers' size, as export_causal_lm(cache="static") records it
        entry = {p.key: p.value for p in model.metadata_props}.get(STATIC_CACHE_METADATA)
        if entry:
            layout = dataclasses.replace(layout, max_length=int(json.loads(entry)["max_length"]))
    if (
        "GroupQueryAttention" in graph_op_types(model)
        and layout.attention_mask
        and "padding" not in fields
    ):
        # the op takes the lengths from the mask (seqlens_k) and counts rotary
        # positions from 0 on the prompt: padding goes after the tokens
        layout = dataclasses.replace(layout, padding="right")
    return layout


def _genai(folder: str) -> FoundModel:
    config = read_json(os.path.join(folder, GENAI_CONFIG), "onnxruntime-genai's config")
    model = config.get("model", {})
    decoder = model.get("decoder", {})
    filename = decoder.get("filename", "model.onnx")
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        raise ContractError(
            f"{GENAI_CONFIG} in {folder!r} names the decoder {filename!r}, which is not there; "
            "build the folder again (onnxruntime_genai.models.builder) or copy it whole."
        )
    proto = load_onnx(path)
    layout = _from_proto(
        proto,
        name="onnxruntime-genai",
        kv_heads=decoder.get("num_key_value_heads"),
        head_dim=decoder.get("head_size"),
        files=(filename,),
        side_files=(GENAI_CONFIG,),
    )
    defaults: dict[str, Any] = {}
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        if key in model:
            defaults[key] = model[key]
    search = config.get("search", {})
    for key in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty"):
        if key in search:
            defaults[key] = search[key]
    return FoundModel(folder, layout, (path,), defaults, (GraphView(proto),))


def _transformers(folder: str) -> FoundModel:
    export = read_json(os.path.join(folder, TRANSFORMERS_EXPORT), "transformers' export file")
    components = export.get("components", {})
    if set(components) != {"prefill", "decode"}:
        raise ContractError(
            f"{TRANSFORMERS_EXPORT} in {folder!r} has the components {sorted(components)}; "
            "diag drives a decoder exported as 'prefill' + 'decode' "
            "(OnnxExporter().export_for_generation on a causal LM)."
        )
    files = tuple(components[c].get("file") for c in ("prefill", "decode"))
    paths = tuple(os.path.join(folder, f) for f in files if isinstance(f, str))
    missing = [
        f for f in files if not isinstance(f, str) or not os.path.isfile(os.path.join(folder, f))
    ]
    if missing:
        raise ContractError(
            f"{TRANSFORMERS_EXPORT} in {folder!r} names the graphs {list(files)}, and "
            f"{missing} are not there; export the model again "
            "(OnnxExporter().export_for_generation) or copy the whole folder."
        )
    prefill, decode = (load_onnx(p) for p in paths)
    layout = _from_proto(
        decode, name="transformers", files=files, side_files=(TRANSFORMERS_EXPORT,)
    )
    prefill_present = _cache_names(o.name for o in prefill.graph.output if o.name != layout.logits)
    if prefill_present is None or layout.name != "transformers":
        raise ContractError(
            f"the graphs of {folder!r} do not name their cache as transformers' exporter "
            f"does (decode inputs {[i.name for i in decode.graph.input][:4]}..., prefill "
            f"outputs {[o.name for o in prefill.graph.output][:3]}...)."
        )
    layout = dataclasses.replace(layout, prefill_present=prefill_present)
    gen_path = os.path.join(folder, "generation_config.json")
    defaults = read_json(gen_path, "generation config") if os.path.exists(gen_path) else {}
    return FoundModel(folder, layout, paths, defaults, (GraphView(prefill), GraphView(decode)))


def model_path(path: Any) -> str:
    """``path`` as a string; a TypeError naming what to give for anything else.

    >>> model_path(3)
    Traceback (most recent call last):
    ...
    TypeError: give the path of a folder or of an .onnx file, not a int.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"give the path of a folder or of an .onnx file, not a {type(path).__name__}."
        )
    return os.fspath(path)


def onnx_file_in(folder: str | os.PathLike) -> str:
    """The graph of a folder without side files: its ``model.onnx``, else its only
    ``.onnx`` file; a :class:`ContractError` (a ValueError) when there is none or
    several.

    Example::

        onnx_file_in("exported")  # 'exported/model.onnx'
    """
    folder = os.fspath(folder)
    onnx_files = sorted(f for f in os.listdir(folder) if f.endswith(".onnx"))
    if "model.onnx" in onnx_files:
        return os.path.join(folder, "model.onnx")
    if len(onnx_files) != 1:
        raise ContractError(
            f"no decoder layout found in the folder {folder!r}: no {GENAI_CONFIG} "
            f"(onnxruntime-genai), no {TRANSFORMERS_EXPORT} (transformers' exporter) and it "
            f"holds {len(onnx_files)} .onnx files ({onnx_files[:4]}); pass the .onnx file itself."
        )
    return os.path.join(folder, onnx_files[0])


def find_model(
    path: str | os.PathLike, layout: Layout | Mapping[str, Any] | None = None
) -> FoundModel:
    """The model at ``path`` (a folder or an ``.onnx`` file) with its layout, detected,
    then ``layout`` applied: a :class:`Layout` replaces it, a mapping overrides fields.

    Raises a :class:`ContractError` naming what was looked for when nothing fits.
    """
    path = model_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"ONNX model {path!r} does not exist; export one with diag.export_causal_lm."
        )
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    found: FoundModel | None = None
    if os.path.exists(os.path.join(folder, GENAI_CONFIG)):
        found = _genai(folder)
    elif os.path.exists(os.path.join(folder, TRANSFORMERS_EXPORT)):
        found = _transformers(folder)
    if found is not None and not os.path.isdir(path):
        if os.path.abspath(path) not in map(os.path.abspath, found.paths):
            found = None  # another file of that folder: read it on its own
    if found is None:
        if os.path.isdir(path):
            path = onnx_file_in(path)
        defaults: dict[str, Any] = {}
        # optimum-onnx and others save the model's generation config next to the graph
        gen_path = os.path.join(os.path.dirname(os.path.abspath(path)), "generation_config.json")
        if os.path.exists(gen_path):
            defaults = read_json(gen_path, "generation config")
        proto = load_onnx(path)
        found = FoundModel(None, _from_proto(proto), (path,), defaults, (GraphView(proto),))
    if layout is not None:
        found = dataclasses.replace(found, layout=_with_overrides(found.layout, layout))
    return found


def detect_layout(model: Any, layout: Layout | Mapping[str, Any] | None = None) -> Layout:
    """The layout of ``model``: a path (folder or file), an ``onnx.ModelProto`` or an
    ``onnxruntime.InferenceSession`` (its names only: no side files, no operators),
    with ``layout`` applied as in :func:`find_model`.

    :param model: what to read the layout of
    :param layout: None (detected), a :class:`Layout` (taken as is) or a mapping of
        fields overriding the detected layout's (``{"padding": "right"}``)
    """
    if isinstance(model, (str, os.PathLike)):
        return find_model(model, layout).layout
    if isinstance(model, onnx.ModelProto):
        return _with_overrides(_from_proto(model), layout)
    if hasattr(model, "get_inputs") and hasattr(model, "get_outputs"):
        found = detect_layout_from_names(
            [i.name for i in model.get_inputs()], [o.name for o in model.get_outputs()]
        )
        entry = metadata_attention(model) if hasattr(model, "get_modelmeta") else None
        if entry and entry.get("padding") and found.attention_mask:
            # export_causal_lm(attention="gqa"): its metadata says the padding side
            found = dataclasses.replace(found, padding=entry["padding"])
        return _with_overrides(found, layout)
    raise TypeError(
        "detect_layout takes a path, an onnx.ModelProto or an onnxruntime.InferenceSession, "
        f"not {type(model).__name__}."
    )


__all__ = [
    "FoundModel",
    "GENAI_CONFIG",
    "TRANSFORMERS_EXPORT",
    "detect_layout",
    "detect_layout_from_names",
    "find_model",
    "onnx_file_in",
    "graph_op_types",
    "model_path",
]
