"""Fuses the small operators of an exported decoder into the ONNX ops made for them.

The exporter translates a transformers decoder op by op: an RMSNorm becomes seven
nodes, a rotary embedding eight per head group, the cache update a ``Concat`` beside
the attention. A decode step of a small model then runs ~1,600 tiny kernels around
its ~200 matrix products, and on a CPU each costs a few microseconds of dispatch and
thread synchronisation: about a third of the step on SmolLM2. :func:`fuse_decoder`
rewrites those patterns into standard ONNX ops (opset 23, run by ONNX Runtime's CPU
and CUDA providers), each checked structurally so that a graph which only looks
similar is left alone:

* ``rms_norm``: ``x * 1/sqrt(mean(x**2) + eps) * w`` -> ``RMSNormalization``;
* ``rotary``: ``x * cos + rotate_half(x) * sin``, with ``cos``/``sin`` computed as
  ``cos(cat(f, f))`` -> ``RotaryEmbedding(x, cos(f), sin(f))``;
* ``attention_past``: ``Attention(q, Concat(past_k, k), Concat(past_v, v))`` whose
  concatenations are the ``present`` outputs -> ``Attention(q, k, v, past_k, past_v)``
  with ``present`` as its own outputs (one kernel, no separate copy);
* ``attention_3d``: ``Attention`` and ``RotaryEmbedding`` on ``[batch, seq, heads *
  head_dim]`` tensors (``q_num_heads``/``kv_num_heads``, ``num_heads``): the
  ``Reshape``/``Transpose`` into heads and back disappear;
* ``packed_matmul``: the matrix products of one input by several weights (q, k, v;
  gate, up) -> one product by the concatenated weights and a ``Split``: a larger
  matrix-vector product keeps the memory bus busier than three small ones, and costs
  one synchronisation of the threads instead of three.

It needs opset >= 23 for the first four (older graphs keep those patterns); the
numbers of each fusion are returned so that callers can report them.

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> x = ir.Value(name="x", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> w1 = ir.Value(name="w1", const_value=ir.tensor(np.ones((4, 2), dtype=np.float32)))
    >>> w2 = ir.Value(name="w2", const_value=ir.tensor(np.ones((4, 3), dtype=np.float32)))
    >>> a, b = ir.node("MatMul", [x, w1]), ir.node("MatMul", [x, w2])
    >>> g = ir.Graph([x], [a.outputs[0], b.outputs[0]], nodes=[a, b], initializers=[w1, w2],
    ...              opset_imports={"": 23})
    >>> fuse_decoder(ir.Model(g, ir_version=10))["packed_matmul"]
    1
    >>> [n.op_type for n in g]
    ['MatMul', 'Split']
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as common_passes

#: the opset where RMSNormalization, RotaryEmbedding and Attention appeared
MIN_OPSET = 23


# ----------------------------------------------------------------------------- helpers
def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    """The node of type ``op_type`` (default domain) producing ``value``, or None."""
    if value is None:
        return None
    node = value.producer()
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
        return None
    return node


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _scalar(value: ir.Value | None) -> float | None:
    array = _const(value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(-1)[0])


def _ints(value: ir.Value | None) -> list[int] | None:
    array = _const(value)
    return None if array is None else [int(v) for v in array.reshape(-1)]


def _attr(node: ir.Node, name: str, default=None):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The other input of a binary node."""
    a, b = node.inputs[0], node.inputs[1]
    if a is value:
        return b
    if b is value:
        return a
    return None


def _rank(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def _last_dim(value: ir.Value) -> int | None:
    if value.shape is None or len(value.shape) == 0:
        return None
    dim = value.shape[-1]
    return dim if isinstance(dim, int) else None


def _is_last_axis(axis: int, rank: int | None) -> bool:
    return axis == -1 or (rank is not None and axis == rank - 1)


def _single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _replace(old: ir.Value, new: ir.Value) -> None:
    """Every use of ``old`` (graph outputs included, keeping their names) reads ``new``."""
    if old.is_graph_output():
        name = old.name
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        old.name = None
        new.name = name
    else:
        ir.convenience.replace_all_uses_with(old, new)


def _inherit(nodes: ir.Node | list[ir.Node], origin: ir.Node) -> None:
    """Gives new nodes the metadata of the node they replace: the exporter's module
    scopes and stack trace (:func:`diag.localize_layer` maps layers through them)."""
    for node in nodes if isinstance(nodes, list) else [nodes]:
        node.metadata_props.update(origin.metadata_props)


def _substitute(graph: ir.Graph, chain: list[ir.Node], fused: ir.Node) -> None:
    """Puts the one-output node ``fused`` in place of ``chain``, whose last node
    produces the value every user of the pattern reads."""
    last = chain[-1]
    _inherit(fused, last)
    graph.insert_before(last, fused)
    fused.outputs[0].shape, fused.outputs[0].type = last.outputs[0].shape, last.outputs[0].type
    _replace(last.outputs[0], fused.outputs[0])
    graph.remove(chain, safe=True)


def _opset(model: ir.Model) -> int:
    return int(model.graph.opset_imports.get("", model.opset_imports.get("", 0)))


# ---------------------------------------------------------------------- RMSNormalization
def _match_rms_norm(mul_w: ir.Node) -> tuple[ir.Value, ir.Value, float, list[ir.Node]] | None:
    """``Mul(w, Mul(x, Reciprocal(Sqrt(Add(ReduceMean(Pow(x, 2), [-1]), eps)))))``."""
    for inner_value in mul_w.inputs:
        inner = _producer(inner_value, "Mul")
        weight = _other(mul_w, inner_value) if inner is not None else None
        if inner is None or weight is None or _const(weight) is None:
            continue
        if _const(weight).ndim != 1 or not _single_use(inner_value):
            continue
        for rsqrt_value in inner.inputs:
            recip = _producer(rsqrt_value, "Reciprocal")
            x = _other(inner, rsqrt_value) if recip is not None else None
            if recip is None or x is None or not _single_use(rsqrt_value):
                continue
            sqrt = _producer(recip.inputs[0], "Sqrt")
            add = _producer(sqrt.inputs[0], "Add") if sqrt is not None else None
            if add is None:
                continue
            mean = _producer(add.inputs[0], "ReduceMean") or _producer(add.inputs[1], "ReduceMean")
            if mean is None:
                continue
            eps = _scalar(_other(add, mean.outputs[0]))
            axes = _ints(mean.inputs[1]) if len(mean.inputs) > 1 else None
            if eps is None or axes is None or len(axes) != 1 or _attr(mean, "keepdims", 1) != 1:
                continue
            if not _is_last_axis(axes[0], _rank(x)):
                continue
            pow_ = _producer(mean.inputs[0], "Pow")
            if pow_ is None or pow_.inputs[0] is not x or _scalar(pow_.inputs[1]) != 2.0:
                continue
            if _const(weight).shape[0] != _last_dim(x):
                continue
            chain = [pow_, mean, add, sqrt, recip, inner, mul_w]
            if any(not _single_use(n.outputs[0]) for n in chain[:-1]):
                continue
            return x, weight, eps, chain
    return None


def fuse_rms_norm(graph: ir.Graph) -> int:
    """RMSNorm (transformers' ``LlamaRMSNorm`` and its copies) -> ``RMSNormalization``."""
    count = 0
    for node in list(graph):
        if node.op_type != "Mul" or node.graph is None:
            continue
        match = _match_rms_norm(node)
        if match is None:
            continue
        x, weight, eps, chain = match
        fused = ir.node(
            "RMSNormalization",
            [x, weight],
            attributes={"axis": -1, "epsilon": eps, "stash_type": 1},
            name=f"{node.name}_rms_norm",
        )
        _substitute(graph, chain, fused)
        count += 1
    return count


# ----------------------------------------------------------------------- RotaryEmbedding
def _cos_sin_source(value: ir.Value, op_type: str) -> ir.Value | None:
    """``f`` when ``value`` is ``Unsqueeze(Cos(Concat(f, f, axis=-1)), [1])``."""
    unsq = _producer(value, "Unsqueeze")
    if unsq is None or _ints(unsq.inputs[1]) != [1]:
        return None
    trig = _producer(unsq.inputs[0], op_type)
    cat = _producer(trig.inputs[0], "Concat") if trig is not None else None
    if cat is None or len(cat.inputs) != 2 or cat.inputs[0] is not cat.inputs[1]:
        return None
    if not _is_last_axis(_attr(cat, "axis", 0), _rank(cat.outputs[0])):
        return None
    return cat.inputs[0]


def _slice_of(value: ir.Value, x: ir.Value, half: int | None) -> tuple[int, int] | None:
    """(start, end) of ``Slice(x, start, end, [last axis])``."""
    node = _producer(value, "Slice")
    if node is None or node.inputs[0] is not x or len(node.inputs) < 4:
        return None
    starts, ends, axes = (_ints(v) for v in node.inputs[1:4])
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else [1]
    if None in (starts, ends, axes) or steps != [1] or len(axes) != 1:
        return None
    if not _is_last_axis(axes[0], _rank(x)):
        return None
    return starts[0], ends[0]


def _match_rotary(add: ir.Node):
    """``Add(Mul(x, cos), Mul(Concat(Neg(x[..., h:]), x[..., :h]), sin))``."""
    muls = [_producer(v, "Mul") for v in add.inputs]
    if None in muls:
        return None
    for plain, rotated in (muls, muls[::-1]):
        for cat_value in rotated.inputs:
            cat = _producer(cat_value, "Concat")
            if cat is None or len(cat.inputs) != 2:
                continue
            neg = _producer(cat.inputs[0], "Neg")
            if neg is None:
                continue
            sin_value = _other(rotated, cat_value)
            sin_src = _cos_sin_source(sin_value, "Sin") if sin_value is not None else None
            for x in plain.inputs:
                cos_value = _other(plain, x)
                cos_src = _cos_sin_source(cos_value, "Cos") if cos_value is not None else None
                if cos_src is None or sin_src is not cos_src:
                    continue
                dim = _last_dim(x)
                half = _last_dim(cos_src)
                if dim is None or half is None or dim != 2 * half or _rank(x) != 4:
                    continue
                first = _slice_of(cat.inputs[1], x, half)
                second = _slice_of(neg.inputs[0], x, half)
                if first != (0, half) or second is None or second[0] != half:
                    continue
                if second[1] < dim:
                    continue
                if not _is_last_axis(_attr(cat, "axis", 0), 4):
                    continue
                inner = [cat.inputs[1].producer(), neg.inputs[0].producer(), neg, cat]
                if any(not _single_use(n.outputs[0]) for n in inner):
                    continue
                if not (_single_use(plain.outputs[0]) and _single_use(rotated.outputs[0])):
                    continue
                return x, cos_src, [*inner, plain, rotated, add]
    return None


def fuse_rotary(graph: ir.Graph) -> int:
    """Rotary embedding (``apply_rotary_pos_emb``, non-interleaved) -> ``RotaryEmbedding``."""
    count = 0
    tables: dict[int, tuple[ir.Value, ir.Value]] = {}
    for node in list(graph):
        if node.op_type != "Add" or node.graph is None:
            continue
        match = _match_rotary(node)
        if match is None:
            continue
        x, freqs, chain = match
        if id(freqs) not in tables:
            # cos/sin of the half-size frequencies, once for every layer
            cos = ir.node("Cos", [freqs], name=f"{freqs.name}_cos_half")
            sin = ir.node("Sin", [freqs], name=f"{freqs.name}_sin_half")
            producer = freqs.producer()
            if producer is not None:
                _inherit([cos, sin], producer)
            if producer is None:
                graph.insert_before(next(iter(graph)), [cos, sin])
            else:
                graph.insert_after(producer, [cos, sin])
            for v in (cos.outputs[0], sin.outputs[0]):
                v.shape, v.type = freqs.shape, freqs.type
            tables[id(freqs)] = (cos.outputs[0], sin.outputs[0])
        cos_half, sin_half = tables[id(freqs)]
        fused = ir.node(
            "RotaryEmbedding",
            [x, cos_half, sin_half],
            attributes={"interleaved": 0},
            name=f"{node.name}_rotary",
        )
        _substitute(graph, chain, fused)
        count += 1
    return count


# ------------------------------------------------------------------ Attention with a past
def fuse_attention_past(graph: ir.Graph) -> int:
    """Moves the cache concatenation into ``Attention`` (``past_key``/``present_key``)."""
    count = 0
    for node in list(graph):
        if node.op_type != "Attention" or node.graph is None:
            continue
        inputs = list(node.inputs) + [None] * (6 - len(node.inputs))
        if (
            len(node.inputs) > 4
            or len(node.outputs) > 1
            and any(o.uses() or o.is_graph_output() for o in node.outputs[1:])
        ):
            continue
        cats = [_producer(inputs[1], "Concat"), _producer(inputs[2], "Concat")]
        if None in cats:
            continue
        ok = True
        for cat in cats:
            past = cat.inputs[0] if len(cat.inputs) == 2 else None
            axis = _attr(cat, "axis", 0)
            if past is None or not past.is_graph_input() or axis not in (2, -2):
                ok = False
            # the concatenation may feed the graph output (present) and this node only
            users = {id(u.node) for u in cat.outputs[0].uses()}
            if users != {id(node)}:
                ok = False
        if not ok:
            continue
        key_cat, value_cat = cats
        fused = ir.node(
            "Attention",
            [
                inputs[0],
                key_cat.inputs[1],
                value_cat.inputs[1],
                inputs[3],
                key_cat.inputs[0],
                value_cat.inputs[0],
            ],
            attributes={k: v for k, v in node.attributes.items()},
            num_outputs=3,
            name=f"{node.name}_with_past",
        )
        _inherit(fused, node)
        graph.insert_before(node, fused)
        for old, new in zip(
            (node.outputs[0], key_cat.outputs[0], value_cat.outputs[0]), fused.outputs, strict=True
        ):
            new.shape, new.type = old.shape, old.type
            _replace(old, new)
        graph.remove([node, key_cat, value_cat], safe=True)
        count += 1
    return count


# ------------------------------------------------------------- Attention on 3D tensors
def _heads_view(value: ir.Value) -> tuple[ir.Value, int, list[ir.Node]] | None:
    """``(x3, heads, nodes)`` when ``value`` is ``Transpose(Reshape(x3, [b, s, heads,
    d]), [0, 2, 1, 3])``: the split of ``[batch, seq, heads * d]`` into heads."""
    transpose = _producer(value, "Transpose")
    if transpose is None or list(_attr(transpose, "perm", [])) != [0, 2, 1, 3]:
        return None
    reshape = _producer(transpose.inputs[0], "Reshape")
    if reshape is None or _rank(reshape.inputs[0]) != 3:
        return None
    shape = reshape.outputs[0].shape
    if shape is None or len(shape) != 4 or not isinstance(shape[2], int):
        return None
    if not (_single_use(reshape.outputs[0]) and _single_use(transpose.outputs[0])):
        return None
    return reshape.inputs[0], shape[2], [reshape, transpose]


def _merge_heads_users(value: ir.Value) -> tuple[ir.Value | None, ir.Node, list[ir.Node]] | None:
    """``(row_scale, reshape, nodes)`` when ``value`` only goes through an optional
    ``Mul`` by a ``[b, 1, s, 1]`` tensor, ``Transpose([0, 2, 1, 3])`` and a ``Reshape``
    back to ``[batch, seq, heads * d]``."""
    nodes: list[ir.Node] = []
    scale = None
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0].node
    if node.op_type == "Mul":
        scale = _other(node, value)
        if scale is None or scale.shape is None or len(scale.shape) != 4:
            return None
        if scale.shape[1] != 1 or scale.shape[3] != 1:
            return None
        nodes.append(node)
        if not _single_use(node.outputs[0]):
            return None
        node = node.outputs[0].uses()[0].node
    if node.op_type != "Transpose" or list(_attr(node, "perm", [])) != [0, 2, 1, 3]:
        return None
    nodes.append(node)
    if not _single_use(node.outputs[0]):
        return None
    reshape = node.outputs[0].uses()[0].node
    if reshape.op_type != "Reshape" or _rank(reshape.outputs[0]) != 3:
        return None
    nodes.append(reshape)
    return scale, reshape, nodes


def fuse_attention_3d(graph: ir.Graph) -> int:
    """``Attention`` (and ``RotaryEmbedding``) on ``[batch, seq, heads * d]`` tensors:
    the reshapes and transpositions into heads and back disappear (8 nodes a layer)."""
    count = 0
    squeezed: dict[int, ir.Value] = {}
    for node in list(graph):
        if node.op_type != "Attention" or node.graph is None or len(node.inputs) < 3:
            continue
        if _rank(node.inputs[0]) != 4 or any(o.uses() for o in node.outputs[3:]):
            continue
        removed: list[ir.Node] = []
        flat: list[tuple[ir.Value, int, ir.Node | None]] = []
        for value in node.inputs[:3]:
            rotary = _producer(value, "RotaryEmbedding")
            if rotary is not None and (len(rotary.inputs) != 3 or not _single_use(value)):
                rotary = None
            view = _heads_view(rotary.inputs[0] if rotary is not None else value)
            if view is None:
                break
            x3, heads, nodes = view
            removed.extend(nodes)
            flat.append((x3, heads, rotary))
        if len(flat) != 3:
            continue
        post = _merge_heads_users(node.outputs[0])
        if post is None:
            continue
        scale, reshape, post_nodes = post
        (q3, q_heads, q_rot), (k3, kv_heads, k_rot), (v3, v_heads, v_rot) = flat
        if v_rot is not None or v_heads != kv_heads:
            continue
        new_nodes: list[ir.Node] = []
        rotated = []
        for x3, heads, rot in ((q3, q_heads, q_rot), (k3, kv_heads, k_rot)):
            if rot is None:
                rotated.append(x3)
                continue
            attrs = {k: v for k, v in rot.attributes.items()}
            attrs["num_heads"] = heads
            new_rot = ir.node(
                "RotaryEmbedding", [x3, *rot.inputs[1:]], attributes=attrs, name=f"{rot.name}_3d"
            )
            new_rot.outputs[0].shape, new_rot.outputs[0].type = x3.shape, x3.type
            new_nodes.append(new_rot)
            removed.append(rot)
            rotated.append(new_rot.outputs[0])
        attrs = {k: v for k, v in node.attributes.items()}
        attrs["q_num_heads"], attrs["kv_num_heads"] = q_heads, kv_heads
        inputs = [rotated[0], rotated[1], v3, *node.inputs[3:]]
        fused = ir.node(
            "Attention",
            inputs,
            attributes=attrs,
            num_outputs=len(node.outputs),
            name=f"{node.name}_3d",
        )
        new_nodes.append(fused)
        result = fused.outputs[0]
        result.shape, result.type = reshape.outputs[0].shape, reshape.outputs[0].type
        if scale is not None:
            # [b, 1, s, 1] -> [b, s, 1], once for all layers
            if id(scale) not in squeezed:
                axes = ir.Value(
                    name=f"{scale.name}_axes", const_value=ir.tensor(np.array([1], np.int64))
                )
                axes.shape, axes.type = ir.Shape([1]), ir.TensorType(ir.DataType.INT64)
                graph.register_initializer(axes)
                squeeze = ir.node("Squeeze", [scale, axes], name=f"{scale.name}_3d")
                squeeze.outputs[0].type = scale.type
                if scale.producer() is not None:
                    _inherit(squeeze, scale.producer())
                    graph.insert_after(scale.producer(), squeeze)
                else:
                    graph.insert_before(next(iter(graph)), squeeze)
                squeezed[id(scale)] = squeeze.outputs[0]
            mul = ir.node("Mul", [result, squeezed[id(scale)]], name=f"{node.name}_3d_rows")
            mul.outputs[0].shape, mul.outputs[0].type = result.shape, result.type
            new_nodes.append(mul)
            result = mul.outputs[0]
        _inherit(new_nodes, node)
        graph.insert_before(node, new_nodes)
        for old, new in zip(node.outputs[1:], fused.outputs[1:], strict=True):
            new.shape, new.type = old.shape, old.type
            _replace(old, new)
        _replace(reshape.outputs[0], result)
        graph.remove([*post_nodes[::-1], node, *removed[::-1]], safe=True)
        count += 1
    return count


# ---------------------------------------------------------------------- packed MatMuls
def pack_matmuls(graph: ir.Graph, min_group: int = 2) -> int:
    """One ``MatMul`` (and a ``Split``) for the products of one input by several 2D
    weights that nothing else reads (q/k/v, gate/up projections)."""
    groups: dict[int, list[ir.Node]] = {}
    for node in graph:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        weight = node.inputs[1]
        if weight is None or not weight.is_initializer() or len(weight.uses()) != 1:
            continue
        if weight.const_value is None or len(weight.const_value.shape) != 2:
            continue
        groups.setdefault(id(node.inputs[0]), []).append(node)
    count = 0
    for nodes in groups.values():
        # same inner dimension and dtype; the order of the graph is kept
        by_kind: dict[tuple, list[ir.Node]] = {}
        for n in nodes:
            w = n.inputs[1].const_value
            by_kind.setdefault((w.shape[0], w.dtype), []).append(n)
        for members in by_kind.values():
            if len(members) < min_group:
                continue
            weights = [m.inputs[1] for m in members]
            arrays = [w.const_value.numpy() for w in weights]
            packed = ir.Value(
                name="_".join(w.name for w in weights[:1]) + f"_packed{len(weights)}",
                const_value=ir.tensor(np.concatenate(arrays, axis=1)),
            )
            packed.shape = ir.Shape(packed.const_value.shape)
            packed.type = ir.TensorType(packed.const_value.dtype)
            graph.register_initializer(packed)
            first = members[0]
            matmul = ir.node("MatMul", [first.inputs[0], packed], name=f"{first.name}_packed")
            sizes = ir.Value(
                name=f"{packed.name}_split",
                const_value=ir.tensor(np.array([a.shape[1] for a in arrays], dtype=np.int64)),
            )
            sizes.shape, sizes.type = ir.Shape([len(arrays)]), ir.TensorType(ir.DataType.INT64)
            graph.register_initializer(sizes)
            split = ir.node(
                "Split",
                [matmul.outputs[0], sizes],
                attributes={"axis": -1},
                num_outputs=len(members),
                name=f"{first.name}_split",
            )
            _inherit([matmul, split], first)
            graph.insert_before(first, [matmul, split])
            matmul.outputs[0].type = first.outputs[0].type
            shape = first.outputs[0].shape
            if shape is not None and len(shape) > 0:
                total = sum(a.shape[1] for a in arrays)
                matmul.outputs[0].shape = ir.Shape([*list(shape)[:-1], total])
            for member, out in zip(members, split.outputs, strict=True):
                out.shape, out.type = member.outputs[0].shape, member.outputs[0].type
                _replace(member.outputs[0], out)
            graph.remove(members, safe=True)
            for w in weights:
                del graph.initializers[w.name]
            count += 1
    return count


#: the fusions, in the order they run (each can rely on the ones before)
FUSIONS: dict[str, Callable[[ir.Graph], int]] = {
    "rms_norm": fuse_rms_norm,
    "rotary": fuse_rotary,
    "attention_past": fuse_attention_past,
    "attention_3d": fuse_attention_3d,
    "packed_matmul": pack_matmuls,
}
#: fusions that emit ops of opset 23
_OPSET23 = {"rms_norm", "rotary", "attention_past", "attention_3d"}


def fuse_decoder(model: ir.Model, fusions: list[str] | None = None) -> dict[str, int]:
    """Applies :data:`FUSIONS` (or the ones named) to ``model`` in place; returns how
    many times each one fired. The opset-23 fusions are skipped on older opsets."""
    names = list(FUSIONS) if fusions is None else fusions
    unknown = [n for n in names if n not in FUSIONS]
    if unknown:
        raise ValueError(f"unknown fusions {unknown}; known: {list(FUSIONS)}")
    opset = _opset(model)
    counts = {}
    for name in names:
        if name in _OPSET23 and opset < MIN_OPSET:
            counts[name] = 0
            continue
        counts[name] = FUSIONS[name](model.graph)
    if any(counts.values()):
        # what the fused patterns read and nothing else does (the cos/sin tables)
        common_passes.RemoveUnusedNodesPass()(model)
    return counts
