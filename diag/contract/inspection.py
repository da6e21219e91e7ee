"""What an ONNX decoder is, read from its files without running it: the layout found,
the operators that matter (the attention, quantized matrix products), the weight bytes,
and why diag cannot drive it when it cannot, one line per kind of problem.

:func:`inspect_onnx` is ``python -m diag inspect PATH``. It loads the graphs without
their external weights (sizes come from the tensors' shapes), so it takes well under a
second even on a large model.

Example::

    print(inspect_onnx("genai-folder"))
    # layout onnxruntime-genai: one graph
    #   ...
    # model.onnx: 30 x GroupQueryAttention (the attention), 211 x MatMulNBits (4 bits, block 32)
    # weights: 172.3 MB
    # drivable: yes
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from diag.contract.detect import find_model, model_path
from diag.contract.files import load_onnx
from diag.contract.graph_view import GraphView
from diag.contract.layout import Layout
from diag.contract.metadata import DTYPE_METADATA
from diag.contract.read import ContractError, read_contract
from diag.helpers.dtypes import _BY_ONNX

#: the operators that compute attention, by the name a report prints
ATTENTION_OPS = ("GroupQueryAttention", "MultiHeadAttention", "Attention", "PagedAttention")
#: the float element types a weight may have
_FLOAT_NAMES = ("float", "float16", "bfloat16", "double")
#: quantized matrix products
QUANTIZED_MATMULS = (
    "MatMulNBits",
    "MatMulInteger",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "GatherBlockQuantized",
)


def _weight_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            total += (n + 1) // 2
        else:
            total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def _dtype_line(model: onnx.ModelProto) -> str:
    """The float dtype of a graph: its metadata's entry (:data:`DTYPE_METADATA`, with the
    model's dtype when it was another), else the element types of its float weights."""
    entry = {p.key: p.value for p in model.metadata_props}.get(DTYPE_METADATA)
    try:
        value = json.loads(entry) if entry else None
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and "dtype" in value:
        source = value.get("model_dtype")
        extra = f" (exported from a {source} model)" if source and source != value["dtype"] else ""
        return f"{value['dtype']}{extra}"
    floats = Counter(
        _BY_ONNX[t.data_type].name
        for t in model.graph.initializer
        if t.data_type in _BY_ONNX and _BY_ONNX[t.data_type].name in _FLOAT_NAMES
    )
    return "/".join(name for name, _ in floats.most_common()) + " weights" if floats else "unknown"


def _operators(model: onnx.ModelProto) -> list[str]:
    """The operators that matter, one phrase per kind."""
    counts = Counter(n.op_type for n in model.graph.node)
    phrases = []
    attention = [op for op in ATTENTION_OPS if counts[op]]
    for op in attention:
        phrases.append(f"{counts[op]} x {op} (the attention)")
    if not attention:
        phrases.append(
            f"no attention operator (attention spelled out: {counts['MatMul']} MatMul, "
            f"{counts['Softmax']} Softmax)"
        )
    for op in QUANTIZED_MATMULS:
        if not counts[op]:
            continue
        kinds = Counter()
        for n in model.graph.node:
            if n.op_type == op:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                kinds[(attrs.get("bits"), attrs.get("block_size"))] += 1
        details = ", ".join(
            (f"{bits} bits, block {block}" if bits is not None else "quantized") + f": {k}"
            for (bits, block), k in sorted(kinds.items(), key=lambda kv: str(kv[0]))
        )
        phrases.append(f"{counts[op]} x {op} ({details})")
    matmul = counts["MatMul"] + counts["Gemm"]
    if matmul and attention:
        phrases.append(f"{matmul} x MatMul/Gemm (float)")
    return phrases


def quantized_bits(model: Any) -> int | None:
    """The bits of a quantized graph's weights: the ``bits`` attribute of its
    ``MatMulNBits`` / ``GatherBlockQuantized`` (4 in onnxruntime-genai's int4 build), 8
    for the int8 operators; None for a float graph or one that cannot be read.

    ``model``: an ``onnx.ModelProto``, or the path of an ``.onnx`` file or of a folder
    holding one (the graph is read without its weights).

    >>> node = onnx.helper.make_node("MatMulNBits", ["a", "b"], ["c"], domain="com.microsoft", bits=4)
    >>> quantized_bits(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [], [])))
    4
    """
    if isinstance(model, (str, os.PathLike)):
        try:
            model = load_onnx(find_model(model_path(model)).paths[-1])
        except (ContractError, OSError, ValueError):
            return None
    if not isinstance(model, onnx.ModelProto):
        return None
    for node in model.graph.node:
        if node.op_type in QUANTIZED_MATMULS:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            return int(attrs.get("bits", 8))
    return None


@dataclass
class Inspection:
    """What :func:`inspect_onnx` found; ``str()`` is the report."""

    path: str
    layout: Layout | None
    graphs: dict[str, list[str]] = field(default_factory=dict)
    weight_bytes: int = 0
    #: the float dtype (``_dtype_line``), one per graph
    dtypes: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def drivable(self) -> bool:
        """Whether diag can drive the model (no problem found)."""
        return self.layout is not None and not self.problems

    def __str__(self) -> str:
        lines = [f"model {self.path}"]
        if self.layout is not None:
            lines += self.layout.summary().splitlines()
        for name, ops in self.graphs.items():
            lines.append(f"{name}: " + "; ".join(ops))
        lines.append(f"weights: {self.weight_bytes / 2**20:.1f} MiB")
        for name, dtype in self.dtypes.items():
            lines.append(f"dtype ({name}): {dtype}")
        if self.drivable:
            lines.append("drivable: yes")
        else:
            lines.append("drivable: no")
            lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def inspect_onnx(path: str | os.PathLike, layout: Any = None) -> Inspection:
    """Reads the model at ``path`` (a folder or an ``.onnx`` file; ``layout`` as in
    :func:`diag.contract.detect.find_model`) and says what it is; ``print()`` it.

    Never raises for a model it cannot drive: :attr:`Inspection.problems` says why.

    :param path: an ``.onnx`` file or the folder holding one
    :param layout: None (detected), a :class:`~diag.contract.Layout` or a mapping of
        fields overriding the detected one
    """
    path = model_path(path)
    try:
        found = find_model(path, layout)
    except ContractError as exc:
        return Inspection(path, None, problems=[str(exc)])
    result = Inspection(path, found.layout)
    graphs = [load_onnx(p) for p in found.paths]
    for p, model in zip(found.paths, graphs, strict=True):
        result.graphs[os.path.basename(p)] = _operators(model)
        result.weight_bytes += _weight_bytes(model)
        result.dtypes[os.path.basename(p)] = _dtype_line(model)
    try:
        read_contract(GraphView(graphs[-1]), layout=found.layout)
    except ContractError as exc:
        # the problem lines of the error, without its advice
        result.problems = [
            line.strip()[2:] for line in str(exc).splitlines() if line.strip().startswith("- ")
        ]
    return result


__all__ = ["Inspection", "inspect_onnx", "quantized_bits"]
