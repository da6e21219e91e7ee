"""Quantizes the weights of an exported causal LM with ONNX Runtime's own tools.

:class:`~diag.export.plan.quantize_options.QuantizeOptions` says what to do (the plan
checked it); :func:`quantize_model` does it:

* ``method="nbits"`` (the default, 4 or 8 bits):
  :class:`onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer` with a
  ``DefaultWeightOnlyQuantConfig``: every ``MatMul`` reading a constant weight becomes
  a ``com.microsoft.MatMulNBits`` (weights in blocks of ``block_size`` along the input
  dimension, one scale per block, a zero point when not symmetric); the lm_head may
  take other bits (``lm_head_bits=8``: a second pass of the same quantizer on that
  node alone); with ``embedding=True`` the embedding ``Gather`` becomes a
  ``GatherBlockQuantized`` (see below);
* the expert tables of a mixture-of-experts export (3-D weights a ``Gather`` reads per
  token) become ``GatherBlockQuantized`` in the same bits and block size
  (:mod:`diag.export.make.quantize_experts`; ``method="nbits"`` only);
* ``method="dynamic"`` (8 bits): :func:`onnxruntime.quantization.quantize_dynamic`,
  int8 weights per channel and activations quantized at run time
  (``DynamicQuantizeMatMul`` / ``MatMulInteger``).

The only edit diag makes before handing the graph over: the exporter writes a tied
``lm_head`` (its weight shared with the embedding, SmolLM2) as ``Gemm(x, E,
transB=1)`` so that the weight is stored once; ONNX Runtime's quantizers read
``MatMul`` only, so with ``lm_head=True`` that ``Gemm`` becomes ``MatMul(x, E^T)``
(the quantized copy replaces the float one, the embedding keeps ``E``).

With ``embedding=True`` and such a tied head quantized, ONNX Runtime's quantizer
would write a second table for the ``Gather``; diag makes the embedding read the
lm_head's quantized bytes instead (:func:`share_tied_embedding`: a
``GatherBlockQuantized`` on a ``Reshape`` of the ``MatMulNBits`` weight, its scales
and zero points): one table in the file, as onnxruntime-genai's builder writes it.
An untied embedding gets its own 4-bit table from ONNX Runtime's quantizer.

Example::

    >>> import onnx
    >>> node = onnx.helper.make_node("MatMul", ["x", "w"], ["y"])
    >>> graph = onnx.helper.make_graph([node], "g", [], [])
    >>> count_ops(onnx.helper.make_model(graph))
    {'MatMul': 1}
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from diag import contract
from diag.export.make.quantize_experts import quantize_expert_tables
from diag.export.plan.quantize_options import QuantizeOptions

#: the ops whose outputs may separate the lm_head from the ``logits`` output
_PASS_THROUGH = ("Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Add")


def _initializers(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in proto.graph.initializer}


def lm_head_node(proto: onnx.ModelProto) -> onnx.NodeProto | None:
    """The ``MatMul`` / ``Gemm`` (``MatMulNBits`` once quantized) with a constant weight
    that computes the logits (walking back from the ``logits`` output through reshapes,
    casts and a bias), or None when there is none."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = _initializers(proto)
    name = contract.LOGITS
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type in ("MatMul", "Gemm", "MatMulNBits") and any(
            i in inits for i in node.input[1:2]
        ):
            return node
        if node.op_type not in _PASS_THROUGH:
            return None
        name = next((i for i in node.input if i not in inits), node.input[0])
    return None


def _gemm_as_matmul(proto: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """``Gemm(x, W, transB=1)`` -> ``MatMul(x, W^T)`` with a new initializer (the
    quantizers read MatMul only); ``W`` stays for its other readers (a tied
    embedding)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or len(node.input) > 2:
        raise ValueError(
            f"the lm_head {node.name!r} is a Gemm with {attrs} and {len(node.input)} inputs: "
            "diag turns only Gemm(x, W[, transB]) into a MatMul for the quantizer; "
            "quantize with lm_head=False."
        )
    weight = _initializers(proto)[node.input[1]]
    array = numpy_helper.to_array(weight)
    if attrs.get("transB", 0):
        array = np.ascontiguousarray(array.T)
    new_name = f"{weight.name}.matmul"
    proto.graph.initializer.append(numpy_helper.from_array(array, new_name))
    node.op_type = "MatMul"
    node.input[1] = new_name
    del node.attribute[:]


def count_ops(proto: onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` of the main graph."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_model(proto: onnx.ModelProto, options: QuantizeOptions) -> onnx.ModelProto:
    """Quantizes ``proto`` (loaded with its weights; modified in place and returned)
    following ``options``; the options are written in its metadata.

    >>> from onnx import helper, TensorProto
    >>> w = numpy_helper.from_array(np.ones((64, 8), np.float32), "w")
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm")], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
    ...     [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])], [w])
    >>> q = quantize_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]),
    ...                    QuantizeOptions())
    >>> [(n.op_type, {a.name: a.i for a in n.attribute}["bits"]) for n in q.graph.node]
    [('MatMulNBits', 4)]
    """
    head = lm_head_node(proto)
    if head is not None and not head.name:
        head.name = "lm_head"  # the quantizers exclude nodes by name
    # the table a tied head shares with the embedding (the Gemm's weight), read before
    # the Gemm becomes a MatMul on its transposed copy
    tied = _tied_embedding(proto, head) if options.lm_head else None
    if options.lm_head and head is not None and head.op_type == "Gemm":
        _gemm_as_matmul(proto, head)
    exclude = [] if options.lm_head or head is None else [head.name]
    # the quantizers log every node at INFO and warn on what they skip (the Gemm of a
    # tied head left in float): diag's report says what was quantized instead
    logger = logging.getLogger("onnxruntime.quantization")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        # a zero row (an embedding's padding token) has a zero scale: 0 / 0, set to 0
        with np.errstate(invalid="ignore", divide="ignore"):
            if options.method == "dynamic":
                quantized = _quantize_dynamic(proto, exclude)
            else:
                quantized = _quantize_nbits(proto, options, exclude, head, tied)
    finally:
        logger.setLevel(previous)
    entries = [p for p in quantized.metadata_props if p.key != contract.QUANTIZATION_METADATA]
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(entries)
    quantized.metadata_props.add(key=contract.QUANTIZATION_METADATA, value=options.to_json())
    return quantized


def _tied_embedding(proto: onnx.ModelProto, head: onnx.NodeProto | None) -> onnx.NodeProto | None:
    """The embedding ``Gather`` reading the table of a tied ``Gemm(x, E, transB=1)``
    head, or None."""
    if head is None or head.op_type != "Gemm":
        return None
    table = head.input[1]
    return next(
        (
            n
            for n in proto.graph.node
            if n.op_type == "Gather"
            and n.input[0] == table
            and {a.name: a.i for a in n.attribute}.get("axis", 0) == 0
        ),
        None,
    )


def _nbits_pass(
    proto: onnx.ModelProto,
    options: QuantizeOptions,
    bits: int,
    exclude: list[str],
    ops: tuple[str, ...] = ("MatMul",),
) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=options.block_size,
        is_symmetric=options.symmetric,
        accuracy_level=options.accuracy_level,
        op_types_to_quantize=ops,
        # Gather: blocks along the hidden dimension (axis 1 of the [vocab, hidden] table)
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        bits=bits,
    )
    quantizer = MatMulNBitsQuantizer(proto, algo_config=config, nodes_to_exclude=exclude)
    quantizer.process()
    return quantizer.model.model


def _quantize_nbits(
    proto: onnx.ModelProto,
    options: QuantizeOptions,
    exclude: list[str],
    head: onnx.NodeProto | None,
    tied: onnx.NodeProto | None,
) -> onnx.ModelProto:
    head_bits = options.lm_head_bits or options.bits
    if options.lm_head and head is not None and head_bits != options.bits:
        # the lm_head alone first, in its own bits: every other MatMul excluded; the
        # second pass skips it (a MatMulNBits already)
        others = [n.name for n in proto.graph.node if n.op_type == "MatMul" and n is not head]
        proto = _nbits_pass(proto, options, head_bits, exclude + others)
    # MatMulNBits pads a last partial block, GatherBlockQuantized does not: a hidden
    # size that is not a multiple of the block size cannot share the bytes
    share = (
        options.embedding
        and tied is not None
        and _initializers(proto)[tied.input[0]].dims[1] % options.block_size == 0
    )
    ops: tuple[str, ...] = ("MatMul",)
    if options.embedding and not share:
        if options.bits != 4:
            raise ValueError(
                "embedding=True on an embedding that is not a tied lm_head's table (or a "
                f"hidden size that is not a multiple of block_size={options.block_size}) needs "
                "bits=4: ONNX Runtime's quantizer writes 4-bit Gather tables only."
            )
        ops = ("MatMul", "Gather")
    quantized = _nbits_pass(proto, options, options.bits, exclude, ops)
    if share:
        share_tied_embedding(quantized, tied.output[0])
    # the experts of a mixture-of-experts export, gathered per token, not MatMul weights
    quantize_expert_tables(quantized, options.bits, options.block_size)
    return quantized


def share_tied_embedding(proto: onnx.ModelProto, embedding_output: str) -> onnx.NodeProto:
    """Replaces the embedding ``Gather`` whose output is ``embedding_output`` by a
    ``GatherBlockQuantized`` reading the quantized lm_head's bytes (``MatMulNBits``'
    ``B`` reshaped to ``[vocab, hidden * bits / 8]``, its scales and zero points:
    the same blocks along the hidden dimension); the float table goes when nothing
    else reads it. Returns the new node. ``proto`` is modified in place.

    The head's table is ``W^T = E`` (``[vocab, hidden]``), quantized by ``MatMulNBits``
    per output row in blocks along the hidden dimension: exactly the blocks of a
    ``GatherBlockQuantized`` on ``E`` with ``quantize_axis=1``, unsigned 4 / 8-bit data
    packed low bits first, and the same default zero point ``2^(bits-1)``.
    """
    head = lm_head_node(proto)
    if head is None or head.op_type != "MatMulNBits":
        raise ValueError("share_tied_embedding needs a model whose lm_head is a MatMulNBits.")
    gather = next(
        (n for n in proto.graph.node if n.op_type == "Gather" and embedding_output in n.output),
        None,
    )
    if gather is None:
        raise ValueError(f"no Gather writes {embedding_output!r}.")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in head.attribute}
    bits, block, vocab = attrs["bits"], attrs["block_size"], attrs["N"]
    inits = _initializers(proto)
    table = gather.input[0]
    data = inits[head.input[1]]
    if int(np.prod(data.dims)) * 8 // bits != vocab * attrs["K"]:
        raise ValueError(
            f"the lm_head's quantized table has padding (K={attrs['K']}, block_size={block}): "
            "the embedding cannot read it; quantize the embedding on its own."
        )

    def reshaped(name: str, shape: list[int]) -> str:
        # a Reshape node, not a reshaped copy: both readers share the stored bytes
        if list(inits[name].dims) == shape:
            return name
        const = f"{name}.embedding_shape"
        proto.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), const))
        out = f"{name}.embedding"
        proto.graph.node.insert(
            list(proto.graph.node).index(gather),
            onnx.helper.make_node("Reshape", [name, const], [out], name=f"{out}_reshape"),
        )
        return out

    k_blocks = attrs["K"] // block
    inputs = [
        reshaped(head.input[1], [vocab, attrs["K"] * bits // 8]),
        gather.input[1],
        reshaped(head.input[2], [vocab, k_blocks]),
    ]
    if len(head.input) > 3 and head.input[3]:
        inputs.append(reshaped(head.input[3], [vocab, (k_blocks * bits + 7) // 8]))
    node = onnx.helper.make_node(
        "GatherBlockQuantized",
        inputs,
        list(gather.output),
        name=f"{gather.name or 'embedding'}_shared",
        domain="com.microsoft",
        bits=bits,
        block_size=block,
        gather_axis=0,
        quantize_axis=1,
    )
    position = list(proto.graph.node).index(gather)
    proto.graph.node.remove(gather)
    proto.graph.node.insert(position, node)
    if not any(table in n.input for n in proto.graph.node):
        kept = [i for i in proto.graph.initializer if i.name != table]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.add(domain="com.microsoft", version=1)
    return node


def _quantize_dynamic(proto: onnx.ModelProto, exclude: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic writes a file: through a temporary folder, loaded back
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        quantize_dynamic(
            proto,
            out,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            use_external_data_format=True,
            extra_options={"MatMulConstBOnly": True},
        )
        return onnx.load(out)


def quantize_file(
    source: str | os.PathLike, filename: str | os.PathLike, options: QuantizeOptions
) -> list[str]:
    """Quantizes the ONNX file ``source`` into ``filename`` (written atomically, its
    weights in ``<filename>.data`` when large); returns the paths written."""
    import onnx_ir as ir

    from diag.export.make.save import save_model_atomic

    quantized = quantize_model(onnx.load(os.fspath(source)), options)
    return save_model_atomic(ir.serde.deserialize_model(quantized), filename)


__all__ = [
    "count_ops",
    "lm_head_node",
    "quantize_file",
    "quantize_model",
    "share_tied_embedding",
]
