"""Quantizes the expert tables of a mixture-of-experts export: the 3-D weights a
``Gather`` reads per token (``experts_gathered``), which ONNX Runtime's quantizers
leave in float (they quantize the weights of ``MatMul`` nodes only).

Each such ``Gather(table[experts, rows, cols], expert_ids)`` (or the exporter's
``GatherND`` of ``table[expert_ids]``) becomes a
``com.microsoft.GatherBlockQuantized``: the table in ``bits`` (4 or 8), symmetric,
one float scale per block of ``block_size`` values along its last axis; the op gathers
the chosen experts and dequantizes them, so a token still reads only its ``top_k``
experts, in 4 or 8 bits instead of 32. A table whose last axis is not a multiple of the
block size stays float (the op does not pad a partial block).

Example::

    >>> import numpy as np
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> w = numpy_helper.from_array(np.ones((2, 4, 32), np.float32), "w")
    >>> g = helper.make_graph([helper.make_node("Gather", ["w", "i"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    >>> m = helper.make_model(g)
    >>> quantize_expert_tables(m, bits=4, block_size=32), m.graph.node[0].op_type
    (1, 'GatherBlockQuantized')
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def _quantize(table: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric block quantization along the last axis: (uint8 data, float scales),
    the values stored with the op's default zero point (8 for 4 bits, 128 for 8),
    two 4-bit values a byte (the even one in the low half)."""
    levels = 2 ** (bits - 1) - 1
    blocks = table.reshape(*table.shape[:-1], table.shape[-1] // block_size, block_size)
    scales = np.abs(blocks).max(axis=-1) / levels
    safe = np.where(scales == 0, 1.0, scales)  # an all-zero block: any scale
    q = np.clip(np.round(blocks / safe[..., None]), -levels - 1, levels) + 2 ** (bits - 1)
    q = q.reshape(table.shape).astype(np.uint8)
    if bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return q, scales.astype(np.float32)


def _expert_ids(
    node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]
) -> str | None:
    """The expert ids ``node`` gathers rows of its table by, or None: ``Gather`` on
    axis 0, or what the exporter writes for ``table[ids]``, ``GatherND(table,
    Unsqueeze(ids, [-1]))`` (the same rows)."""
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "Gather" and attrs.get("axis", 0) == 0:
        return node.input[1]
    if node.op_type != "GatherND" or attrs.get("batch_dims", 0) != 0:
        return None
    unsqueeze = producers.get(node.input[1])
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.input) < 2:
        return None
    axes = inits.get(unsqueeze.input[1])
    if axes is None or numpy_helper.to_array(axes).tolist() != [-1]:
        return None
    return unsqueeze.input[0]


def quantize_expert_tables(proto: onnx.ModelProto, bits: int, block_size: int) -> int:
    """Replaces, in ``proto``, every gather of rows of a 3-D float32 initializer
    (:func:`_expert_ids`) by a ``GatherBlockQuantized``; returns how many."""
    inits = {t.name: t for t in proto.graph.initializer}
    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    producers = {o: n for n in proto.graph.node for o in n.output}
    done = 0
    for index, node in enumerate(proto.graph.node):
        ids = _expert_ids(node, producers, inits)
        table = inits.get(node.input[0]) if ids is not None else None
        if table is None or len(table.dims) != 3:
            continue
        if table.data_type != onnx.TensorProto.FLOAT or table.dims[-1] % block_size:
            continue
        if readers[table.name] != 1:  # the table is rewritten in place: one reader only
            continue
        data, scales = _quantize(numpy_helper.to_array(table), bits, block_size)
        name = table.name
        table.CopyFrom(numpy_helper.from_array(data, f"{name}_Q{bits}"))
        proto.graph.initializer.append(numpy_helper.from_array(scales, f"{name}_scales"))
        replacement = helper.make_node(
            "GatherBlockQuantized",
            [f"{name}_Q{bits}", ids, f"{name}_scales"],
            list(node.output),
            name=node.name or f"{name}_gather",
            domain=MS_DOMAIN,
            gather_axis=0,
            quantize_axis=2,
            block_size=block_size,
            bits=bits,
        )
        replacement.metadata_props.extend(node.metadata_props)
        proto.graph.node[index].CopyFrom(replacement)
        done += 1
    if done and not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


__all__ = ["quantize_expert_tables"]
