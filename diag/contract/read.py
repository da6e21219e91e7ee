"""Reads a session's inputs and outputs against a :class:`~diag.contract.layout.Layout`.

:func:`read_contract` returns what an engine needs to drive the model (the cache
names in layer order, the cache dtype and shapes, whether position ids are taken, the
vocabulary size) or raises a :class:`ContractError` that lists every mismatch and what
was expected.

Example::

    info = read_contract(session)
    info.num_layers, info.past_names[:2]
    # (30, ['past_key_values.0.key', 'past_key_values.0.value'])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto

from diag.contract.fixed_dims import fixed_length_problems, fixed_size
from diag.contract.layout import DIAG_LAYOUT, Layout
from diag.contract.names import AnyCacheNames
from diag.helpers.dtypes import onnx_dtype_to_numpy_dtype, ort_type_to_onnx_dtype

# the element types the contract accepts for the cache (and the logits), and for the ids
_CACHE_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
_INT_TYPES = (TensorProto.INT64, TensorProto.INT32)


class ContractError(ValueError):
    """The ONNX model does not follow the export contract; the message lists why."""


@dataclass(frozen=True)
class ContractInfo:
    """What an ONNX causal LM takes and returns, read from its session against
    ``layout``.

    ``past_shapes[i]`` is ``(kv_heads, head_dim)`` of ``past_names[i]``; ``int_types``
    maps ``input_ids`` / ``attention_mask`` / ``position_ids`` (those the graph has) to
    their numpy dtype; ``batch_size`` is the batch the graph was specialised to, None
    when dynamic.
    """

    layout: Layout
    num_layers: int
    has_position_ids: bool
    past_names: list[str]
    present_names: list[str]
    past_shapes: list[tuple[int, int]]
    #: ONNX element type of each past (and present) tensor
    past_elem_types: list[int]
    int_types: dict[str, np.dtype]
    vocab_size: int | None
    batch_size: int | None = None
    #: whether the graph takes ``layout.logits_to_keep`` (it then computes the logits
    #: of the positions fed there only, :mod:`diag.contract.logits_to_keep`)
    has_logits_to_keep: bool = False

    @property
    def has_attention_mask(self) -> bool:
        """Whether the graph takes an attention mask (else it cannot be padded)."""
        return bool(self.layout.attention_mask) and self.layout.attention_mask in self.int_types

    @property
    def output_names(self) -> list[str]:
        """Outputs in the order the backend binds them: logits, then the cache."""
        return [self.layout.logits, *self.present_names]


class _Problems:
    """Problems grouped by kind: one line per kind, however many tensors it hits.

    >>> p = _Problems()
    >>> for i in range(3):
    ...     p.add("input {what} is symbolic", f"past.{i}")
    >>> p.lines()
    ["input 'past.0', 'past.1', 'past.2' (3 tensors) is symbolic"]
    """

    def __init__(self) -> None:
        self._groups: dict[str, list[str]] = {}

    def add(self, template: str, name: str = "") -> None:
        self._groups.setdefault(template, []).append(name)

    def __bool__(self) -> bool:
        return bool(self._groups)

    def lines(self) -> list[str]:
        result = []
        for template, names in self._groups.items():
            if len(names) == 1:
                what = repr(names[0])
            elif len(names) <= 3:
                what = ", ".join(map(repr, names)) + f" ({len(names)} tensors)"
            else:
                what = f"{names[0]!r} ... {names[-1]!r} ({len(names)} tensors)"
            result.append(template.replace("{what}", what))
        return result


def _static(dim: Any, given: int | None) -> int | None:
    """A dimension's size: static in the graph, else ``given`` by the layout."""
    size = fixed_size(dim)
    return given if size is None else size


def _element_type(ort_type: str) -> int | None:
    try:
        return ort_type_to_onnx_dtype(ort_type)
    except ValueError:  # a sequence, a map...
        return None


def _cache_layers(
    names: Iterable[str], skip: Sequence[str], cache: AnyCacheNames, what: str, problems: _Problems
) -> dict[int, set[str]]:
    """Layer -> kinds found among ``names`` (the cache ones), other names reported."""
    layers: dict[int, set[str]] = {}
    for name in names:
        if name in skip:
            continue
        parsed = cache.parse(name)
        if parsed is None:
            key, value = cache.kinds
            problems.add(
                f"unexpected {what} {{what}} (cache {what}s must be named "
                f"{cache.pattern(key)!r} / {cache.pattern(value)!r})",
                name,
            )
            continue
        layers.setdefault(parsed[0], set()).add(parsed[1])
    return layers


def contract_error(problems: Sequence[str], layout: Layout) -> ContractError:
    """The error listing ``problems``, saying what the layout expected and what to do."""
    listed = "\n".join(f"  - {p}" for p in problems)
    if layout.name == DIAG_LAYOUT.name:
        return ContractError(
            f"this ONNX model does not follow the export contract:\n{listed}\n"
            f"diag.onnx_generate drives models that follow diag.contract ({layout.describe()}); "
            "export the model with diag.export_causal_lm, or see what the file is with "
            "'python -m diag inspect PATH'."
        )
    return ContractError(
        f"this ONNX model does not follow the {layout.name} layout it was read as:\n{listed}\n"
        f"expected {layout.describe()}; see what the file is with 'python -m diag inspect "
        "PATH', or pass layout= with the fields to change."
    )


def read_contract(session: Any, *, layout: Layout = DIAG_LAYOUT) -> ContractInfo:
    """Checks ``session`` (an ``onnxruntime.InferenceSession``) against ``layout``.

    Raises :class:`ContractError` (a ValueError) listing every problem, one line per
    kind: missing or unexpected inputs/outputs, wrong dtypes, past and present that do
    not pair up, cache tensors that are not ``[batch, kv_heads, length, head_dim]``
    with ``kv_heads`` and ``head_dim`` static or given by the layout, lengths the
    decoding loop grows fixed by the graph (:mod:`diag.contract.fixed_dims`).

    :param session: the session of the exported model
    :param layout: the names and shapes expected (:func:`diag.contract.detect.detect_layout` finds
        those of another tool's file)
    :return: the names and cache shapes read, for the backend that binds them
    """
    if not (hasattr(session, "get_inputs") and hasattr(session, "get_outputs")):
        hint = (
            ": for a path, diag.inspect_onnx(path) says what the file is and "
            "diag.contract.detect.detect_layout(path) its layout"
            if isinstance(session, (str, os.PathLike))
            else ""
        )
        raise TypeError(
            "read_contract checks an onnxruntime.InferenceSession "
            f"(onnxruntime.InferenceSession(path)), not a {type(session).__name__}{hint}."
        )
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = _Problems()

    for required in (layout.input_ids, layout.attention_mask):
        if required and required not in inputs:
            problems.add("missing input {what}", required)
    if layout.logits not in outputs:
        problems.add("missing output {what}", layout.logits)

    int_types: dict[str, np.dtype] = {}
    for name in layout.token_inputs:
        if name in inputs:
            t = inputs[name].type
            elem = _element_type(t)
            if elem not in _INT_TYPES:
                problems.add(f"input {{what}} has type {t}, expected tensor(int64)", name)
            else:
                int_types[name] = onnx_dtype_to_numpy_dtype(elem)
    batch_size = None
    if layout.input_ids in inputs:
        first = inputs[layout.input_ids].shape[0] if inputs[layout.input_ids].shape else None
        batch_size = first if isinstance(first, int) else None

    past_layers = _cache_layers(inputs, layout.token_inputs, layout.past, "input", problems)
    present_layers = _cache_layers(outputs, (layout.logits,), layout.present, "output", problems)

    others = [n for n in inputs if n not in layout.token_inputs]
    if not past_layers and not others:
        problems.add(
            f"no cache inputs {layout.past.patterns()!r}: the model was exported "
            "without its KV cache and would recompute the whole sequence at every token"
        )
    elif not past_layers:
        problems.add(
            f"no input is named as a cache input {layout.past.patterns()!r}: name the "
            "cache inputs so, or keep the exporter's names with the cache inputs after "
            f"{', '.join(layout.token_inputs)} and as many cache outputs after the logits "
            "(key then value of each layer: diag reads them by position)"
        )
    if not present_layers:
        problems.add(f"no cache outputs {layout.present.patterns()!r}")
    num_layers = len(past_layers)
    if past_layers and sorted(past_layers) != list(range(num_layers)):
        problems.add(f"cache input layers are {sorted(past_layers)}, expected 0..{num_layers - 1}")
    for cache, found, what in (
        (layout.past, past_layers, "input"),
        (layout.present, present_layers, "output"),
    ):
        for layer, kinds in sorted(found.items()):
            for missing in (k for k in cache.kinds if k not in kinds):
                problems.add(f"missing {what} {{what}}", cache.name(layer, missing))
    if past_layers and present_layers and sorted(past_layers) != sorted(present_layers):
        problems.add(
            f"{len(past_layers)} layers of cache inputs but {len(present_layers)} layers "
            f"of cache outputs (layers {sorted(past_layers)} vs {sorted(present_layers)}): "
            f"each {layout.past.pattern('*')} needs its {layout.present.pattern('*')}"
        )

    layers = sorted(past_layers)
    past_names = [layout.past.name(i, kind) for i in layers for kind in layout.past.kinds]
    present_names = [layout.present.name(i, kind) for i in layers for kind in layout.present.kinds]
    past_shapes: list[tuple[int, int]] = []
    past_types: list[int] = []
    for past, present in zip(past_names, present_names, strict=True):
        if past not in inputs or present not in outputs:
            continue
        pt, qt = inputs[past].type, outputs[present].type
        elem = _element_type(pt)
        if elem not in _CACHE_TYPES:
            problems.add(f"input {{what}} has type {pt}, expected a float tensor", past)
        if pt != qt:
            problems.add(f"input {{what}} is {pt} but its output is {qt}", past)
        shape = inputs[past].shape
        if len(shape) != 4:
            problems.add(
                f"input {{what}} has rank {len(shape)} (shape {shape}), expected "
                "[batch, kv_heads, past_length, head_dim]",
                past,
            )
            continue
        heads = _static(shape[1], layout.kv_heads)
        dim = _static(shape[3], layout.head_dim)
        if layout.is_pair:
            # the prefill graph makes the first cache: no empty one to build
            heads, dim = heads or 0, dim or 0
        if heads is None or dim is None:
            problems.add(
                f"input {{what}} has shape {shape}: kv_heads (dim 1) and head_dim (dim 3) "
                "must be static, or given by the layout (kv_heads=, head_dim=), to build "
                "the empty cache of the prefill",
                past,
            )
            continue
        past_shapes.append((heads, dim))
        past_types.append(elem)  # a float type: any other raises below

    # lengths the loop grows, fixed at the sample's by an export without dynamic shapes
    shapes = {name: i.shape or [] for name, i in inputs.items()}
    for template, name in fixed_length_problems(shapes, layout, past_names):
        problems.add(template, name)

    vocab_size = None
    if layout.logits in outputs:
        lt = outputs[layout.logits].type
        if _element_type(lt) not in _CACHE_TYPES:
            problems.add(f"output {{what}} has type {lt}, expected a float tensor", layout.logits)
        lshape = outputs[layout.logits].shape
        if len(lshape) != 3:
            problems.add(
                f"output {{what}} has shape {lshape}, expected [batch, seq_length, vocab]",
                layout.logits,
            )
        elif isinstance(lshape[2], int):
            vocab_size = lshape[2]

    if problems:
        raise contract_error(problems.lines(), layout)
    return ContractInfo(
        layout=layout,
        num_layers=num_layers,
        has_position_ids=bool(layout.position_ids) and layout.position_ids in inputs,
        past_names=past_names,
        present_names=present_names,
        past_shapes=past_shapes,
        past_elem_types=past_types,
        int_types=int_types,
        vocab_size=vocab_size,
        batch_size=batch_size,
        has_logits_to_keep=bool(layout.logits_to_keep) and layout.logits_to_keep in int_types,
    )
