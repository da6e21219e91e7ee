"""Read a session's inputs and outputs and check them against the export contract
(:mod:`diag.export.contract`).

:func:`read_contract` returns what the ONNX Runtime backend needs to drive the model
(the cache names in layer order, the cache dtype and shapes, whether position ids are
taken, the vocabulary size) or raises a :class:`ContractError` that lists every
mismatch and what was expected.

Example::

    info = read_contract(session)
    info.num_layers, info.past_names[:2]
    # (30, ['past_key_values.0.key', 'past_key_values.0.value'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from diag.export import contract as C

#: ONNX Runtime type strings -> ONNX element types
_ORT_TYPES: dict[str, int] = {
    "tensor(float)": onnx.TensorProto.FLOAT,
    "tensor(float16)": onnx.TensorProto.FLOAT16,
    "tensor(bfloat16)": onnx.TensorProto.BFLOAT16,
    "tensor(double)": onnx.TensorProto.DOUBLE,
    "tensor(int64)": onnx.TensorProto.INT64,
    "tensor(int32)": onnx.TensorProto.INT32,
}
_FLOATS = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)")
_INTS = ("tensor(int64)", "tensor(int32)")

_PAST_RE = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PRESENT_RE = re.compile(r"^present\.(\d+)\.(key|value)$")

_HOW_TO = (
    "diag.onnx_generate drives models that follow diag.export.contract "
    "(inputs input_ids, attention_mask, [position_ids], past_key_values.{i}.key/value; "
    "outputs logits, present.{i}.key/value); export the model with diag.export_causal_lm."
)


class ContractError(ValueError):
    """The ONNX model does not follow the export contract; the message lists why."""


@dataclass(frozen=True)
class ContractInfo:
    """What an ONNX causal LM takes and returns, read from its session.

    ``past_shapes[i]`` is ``(kv_heads, head_dim)`` of ``past_names[i]``; ``int_types``
    maps ``input_ids`` / ``attention_mask`` / ``position_ids`` to their numpy dtype.
    """

    num_layers: int
    has_position_ids: bool
    past_names: list[str]
    present_names: list[str]
    past_shapes: list[tuple[int, int]]
    #: ONNX element type of each past (and present) tensor
    past_elem_types: list[int]
    logits_elem_type: int
    int_types: dict[str, Any]
    vocab_size: int | None

    @property
    def output_names(self) -> list[str]:
        """Outputs in the order the backend binds them: logits, then the cache."""
        return [C.LOGITS, *self.present_names]


def _cache_names(layers: list[int], present: bool) -> list[str]:
    key, value = (
        (C.present_key_name, C.present_value_name)
        if present
        else (C.past_key_name, C.past_value_name)
    )
    return [name for layer in layers for name in (key(layer), value(layer))]


def read_contract(session: Any) -> ContractInfo:
    """Checks ``session`` (an ``onnxruntime.InferenceSession``) against the contract.

    Raises :class:`ContractError` (a ValueError) listing every problem: missing or
    unexpected inputs/outputs, wrong dtypes, past and present that do not pair up,
    cache tensors that are not ``[batch, kv_heads, length, head_dim]`` with static
    ``kv_heads`` and ``head_dim``.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems: list[str] = []

    for required in (C.INPUT_IDS, C.ATTENTION_MASK):
        if required not in inputs:
            problems.append(f"missing input {required!r}")
    if C.LOGITS not in outputs:
        problems.append(f"missing output {C.LOGITS!r}")

    int_types: dict[str, Any] = {}
    for name in (C.INPUT_IDS, C.ATTENTION_MASK, C.POSITION_IDS):
        if name in inputs:
            t = inputs[name].type
            if t not in _INTS:
                problems.append(f"input {name!r} has type {t}, expected tensor(int64)")
            else:
                int_types[name] = np.int64 if t == "tensor(int64)" else np.int32

    past_layers: dict[int, set[str]] = {}
    present_layers: dict[int, set[str]] = {}
    for name in inputs:
        if name in (C.INPUT_IDS, C.ATTENTION_MASK, C.POSITION_IDS):
            continue
        m = _PAST_RE.match(name)
        if m is None:
            problems.append(
                f"unexpected input {name!r} (cache inputs must be named "
                f"'past_key_values.{{i}}.key' / 'past_key_values.{{i}}.value')"
            )
            continue
        past_layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    for name in outputs:
        if name == C.LOGITS:
            continue
        m = _PRESENT_RE.match(name)
        if m is None:
            problems.append(
                f"unexpected output {name!r} (cache outputs must be named "
                f"'present.{{i}}.key' / 'present.{{i}}.value')"
            )
            continue
        present_layers.setdefault(int(m.group(1)), set()).add(m.group(2))

    if not past_layers:
        problems.append(
            "no cache inputs 'past_key_values.{i}.key/value': the model was exported "
            "without its KV cache and would recompute the whole sequence at every token"
        )
    if not present_layers:
        problems.append("no cache outputs 'present.{i}.key/value'")
    num_layers = len(past_layers)
    if past_layers and sorted(past_layers) != list(range(num_layers)):
        problems.append(
            f"cache input layers are {sorted(past_layers)}, expected 0..{num_layers - 1}"
        )
    for layer, kinds in sorted(past_layers.items()):
        if kinds != {"key", "value"}:
            missing = ({"key", "value"} - kinds).pop()
            problems.append(f"missing input 'past_key_values.{layer}.{missing}'")
    for layer, kinds in sorted(present_layers.items()):
        if kinds != {"key", "value"}:
            missing = ({"key", "value"} - kinds).pop()
            problems.append(f"missing output 'present.{layer}.{missing}'")
    if past_layers and present_layers and sorted(past_layers) != sorted(present_layers):
        problems.append(
            f"{len(past_layers)} layers of cache inputs but {len(present_layers)} layers "
            f"of cache outputs (layers {sorted(past_layers)} vs {sorted(present_layers)}): "
            "each past_key_values.{i}.* needs its present.{i}.*"
        )

    past_names = _cache_names(sorted(past_layers), present=False)
    present_names = _cache_names(sorted(past_layers), present=True)
    past_shapes: list[tuple[int, int]] = []
    past_types: list[int] = []
    for past, present in zip(past_names, present_names, strict=True):
        if past not in inputs or present not in outputs:
            continue
        pt, qt = inputs[past].type, outputs[present].type
        if pt not in _FLOATS:
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
        past_types.append(_ORT_TYPES.get(pt, onnx.TensorProto.UNDEFINED))

    logits_type = onnx.TensorProto.FLOAT
    vocab_size = None
    if C.LOGITS in outputs:
        lt = outputs[C.LOGITS].type
        if lt not in _FLOATS:
            problems.append(f"output 'logits' has type {lt}, expected a float tensor")
        else:
            logits_type = _ORT_TYPES[lt]
        lshape = outputs[C.LOGITS].shape
        if len(lshape) != 3:
            problems.append(
                f"output 'logits' has shape {lshape}, expected [batch, seq_length, vocab]"
            )
        elif isinstance(lshape[2], int):
            vocab_size = lshape[2]

    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ContractError(
            f"this ONNX model does not follow the export contract:\n{listed}\n{_HOW_TO}"
        )
    return ContractInfo(
        num_layers=num_layers,
        has_position_ids=C.POSITION_IDS in inputs,
        past_names=past_names,
        present_names=present_names,
        past_shapes=past_shapes,
        past_elem_types=past_types,
        logits_elem_type=logits_type,
        int_types=int_types,
        vocab_size=vocab_size,
    )
