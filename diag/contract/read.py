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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto

from diag.contract.layout import DIAG_LAYOUT, Layout
from diag.contract.names import CacheNames
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
    maps ``input_ids`` / ``attention_mask`` / ``position_ids`` to their numpy dtype.
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

    @property
    def output_names(self) -> list[str]:
        """Outputs in the order the backend binds them: logits, then the cache."""
        return [self.layout.logits, *self.present_names]


def _element_type(ort_type: str) -> int | None:
    try:
        return ort_type_to_onnx_dtype(ort_type)
    except ValueError:  # a sequence, a map...
        return None


def _cache_layers(
    names: Iterable[str], skip: Sequence[str], cache: CacheNames, what: str, problems: list[str]
) -> dict[int, set[str]]:
    """Layer -> kinds found among ``names`` (the cache ones), other names reported."""
    layers: dict[int, set[str]] = {}
    for name in names:
        if name in skip:
            continue
        parsed = cache.parse(name)
        if parsed is None:
            key, value = cache.kinds
            problems.append(
                f"unexpected {what} {name!r} (cache {what}s must be named "
                f"{cache.pattern(key)!r} / {cache.pattern(value)!r})"
            )
            continue
        layers.setdefault(parsed[0], set()).add(parsed[1])
    return layers


def read_contract(session: Any, *, layout: Layout = DIAG_LAYOUT) -> ContractInfo:
    """Checks ``session`` (an ``onnxruntime.InferenceSession``) against ``layout``.

    Raises :class:`ContractError` (a ValueError) listing every problem: missing or
    unexpected inputs/outputs, wrong dtypes, past and present that do not pair up,
    cache tensors that are not ``[batch, kv_heads, length, head_dim]`` with static
    ``kv_heads`` and ``head_dim``.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems: list[str] = []

    for required in (layout.input_ids, layout.attention_mask):
        if required not in inputs:
            problems.append(f"missing input {required!r}")
    if layout.logits not in outputs:
        problems.append(f"missing output {layout.logits!r}")

    int_types: dict[str, np.dtype] = {}
    for name in layout.token_inputs:
        if name in inputs:
            t = inputs[name].type
            elem = _element_type(t)
            if elem not in _INT_TYPES:
                problems.append(f"input {name!r} has type {t}, expected tensor(int64)")
            else:
                int_types[name] = onnx_dtype_to_numpy_dtype(elem)

    past_layers = _cache_layers(inputs, layout.token_inputs, layout.past, "input", problems)
    present_layers = _cache_layers(outputs, (layout.logits,), layout.present, "output", problems)

    if not past_layers:
        problems.append(
            f"no cache inputs {layout.past.patterns()!r}: the model was exported "
            "without its KV cache and would recompute the whole sequence at every token"
        )
    if not present_layers:
        problems.append(f"no cache outputs {layout.present.patterns()!r}")
    num_layers = len(past_layers)
    if past_layers and sorted(past_layers) != list(range(num_layers)):
        problems.append(
            f"cache input layers are {sorted(past_layers)}, expected 0..{num_layers - 1}"
        )
    for cache, found, what in (
        (layout.past, past_layers, "input"),
        (layout.present, present_layers, "output"),
    ):
        for layer, kinds in sorted(found.items()):
            for missing in (k for k in cache.kinds if k not in kinds):
                problems.append(f"missing {what} {cache.name(layer, missing)!r}")
    if past_layers and present_layers and sorted(past_layers) != sorted(present_layers):
        problems.append(
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
            problems.append(f"input {past!r} has type {pt}, expected a float tensor")
        if pt != qt:
            problems.append(f"input {past!r} is {pt} but output {present!r} is {qt}")
        shape = inputs[past].shape
        if len(shape) != 4:
            problems.append(
                f"input {past!r} has rank {len(shape)} (shape {shape}), expected "
                "[batch, kv_heads, past_length, head_dim]"
            )
            continue
        heads, dim = shape[1], shape[3]
        if not isinstance(heads, int) or not isinstance(dim, int):
            problems.append(
                f"input {past!r} has shape {shape}: kv_heads (dim 1) and head_dim (dim 3) "
                "must be static to build the empty cache of the prefill"
            )
            continue
        past_shapes.append((heads, dim))
        past_types.append(elem)  # a float type: any other raises below

    vocab_size = None
    if layout.logits in outputs:
        lt = outputs[layout.logits].type
        if _element_type(lt) not in _CACHE_TYPES:
            problems.append(f"output {layout.logits!r} has type {lt}, expected a float tensor")
        lshape = outputs[layout.logits].shape
        if len(lshape) != 3:
            problems.append(
                f"output {layout.logits!r} has shape {lshape}, expected [batch, seq_length, vocab]"
            )
        elif isinstance(lshape[2], int):
            vocab_size = lshape[2]

    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ContractError(
            f"this ONNX model does not follow the export contract:\n{listed}\n"
            f"diag.onnx_generate drives models that follow diag.contract ({layout.describe()}); "
            "export the model with diag.export_causal_lm."
        )
    return ContractInfo(
        layout=layout,
        num_layers=num_layers,
        has_position_ids=layout.position_ids in inputs,
        past_names=past_names,
        present_names=present_names,
        past_shapes=past_shapes,
        past_elem_types=past_types,
        int_types=int_types,
        vocab_size=vocab_size,
    )
