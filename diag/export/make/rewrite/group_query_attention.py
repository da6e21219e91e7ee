"""``Attention`` + ``RotaryEmbedding`` (opset 23) -> ``com.microsoft.GroupQueryAttention``.

After the fusions of :data:`~diag.export.make.rewrite.FUSIONS`, a layer's attention reads::

    q3, k3, v3 = Split(MatMul(x, Wqkv))                   # packed_matmul
    y, present_key, present_value = Attention(
        RotaryEmbedding(q3, Cos(f), Sin(f)), RotaryEmbedding(k3, Cos(f), Sin(f)), v3,
        mask, past_key, past_value)                          # rotary, attention_3d
    y = Mul(y, rows)                                         # optional row scale

where ``f`` are the rotary angles of ``position_ids``. The rule rewrites it into
ONNX Runtime's ``GroupQueryAttention(Wqkv_product, "", "", past_key, past_value,
seqlens_k, total_sequence_length, cos_cache, sin_cache)`` with ``do_rotary=1``: the
kernel rotates q and k itself at the positions it reads from ``seqlens_k``, appends
the step to the cache and scores only each row's real keys (the opset-23 op of ONNX
Runtime's CPU scores every key, masked or not). ``seqlens_k`` (each row's length
minus one) and ``total_sequence_length`` (the mask's width) are computed once from
the graph input ``attention_mask``; ``cos_cache`` / ``sin_cache`` are initializers,
the angles evaluated at positions ``0 .. max_positions - 1`` (:func:`rotary_tables`).
The packed product is given as one input when q, k and v are the three outputs of
one ``Split`` (packed_matmul's), else q, k and v go as three inputs. The row scale
(diag's patch for fully masked rows) is dropped: a right-padded batch
(:data:`diag.contract.GQA_LAYOUT`) has no such row whose output is read.

onnxscript 0.7.2 has a GroupQueryAttention fusion (``onnxscript.rewriter.ort_fusions.gqa``),
but it matches the exporter's graph before any fusion (its own causal-mask pattern,
``com.microsoft`` rotary from ``position_ids``, an SDPA pattern) and refuses sliding
windows; it does not fire on the opset-23 ``Attention`` diag's fusions write, hence
this rule, written on their output.

A rule instance knows what the graph does not say: the number of positions of the
rotary tables and the sliding window of each layer (``local_window_size``, by the
layer's index: the rank of its past key among the graph's 4-D inputs, keys and
values alternating, as the exporter writes them before diag renames them);
:func:`gqa_rules` builds it.

Example::

    >>> [rule.name for rule in gqa_rules(max_positions=64)]
    ['GroupQueryAttentionScaled', 'GroupQueryAttention']
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from diag.contract import names as N

#: the domain of ONNX Runtime's contrib ops
MS_DOMAIN = "com.microsoft"

# the ops the angles of the rotary may be computed with (evaluated by _angles)
_ANGLE_OPS = frozenset({
    "Unsqueeze", "Cast", "Mul", "MatMul", "Transpose", "Reshape", "Identity", "Expand",
    "Concat", "Shape",
})  # fmt: skip


def _const(value: ir.Value) -> np.ndarray | None:
    tensor = value.const_value
    return None if tensor is None else tensor.numpy()


def _angles(value: ir.Value, positions: np.ndarray, memo: dict) -> np.ndarray | str:
    """``value`` (the rotary angles) evaluated with ``position_ids = positions``, or the
    reason it cannot be (an op outside :data:`_ANGLE_OPS`, another graph input)."""
    if value in memo:
        return memo[value]
    const = _const(value)
    if const is not None:
        return const
    if value.is_graph_input():
        if value.name != N.POSITION_IDS:
            return f"the rotary angles depend on the input {value.name!r}, not only on position ids"
        return positions
    node = value.producer()
    if node is None or node.op_type not in _ANGLE_OPS or node.domain not in ("", "ai.onnx"):
        op = "?" if node is None else node.op_type
        return f"the rotary angles are computed by {op}, which the rule does not evaluate"
    if node.op_type == "Shape":
        # transformers 4.x expands inv_freq to the batch (Shape(mask)[:1]): batch 1 here
        shape = node.inputs[0].shape
        start = node.attributes.get("start", ir.AttrInt64("", 0)).as_int()
        end = node.attributes.get("end", ir.AttrInt64("", len(shape or ()))).as_int()
        dims = list(shape or ())[start:end]
        if shape is None or any(not isinstance(d, int) and str(d) != N.DIM_BATCH for d in dims):
            return f"the rotary angles read the shape of {node.inputs[0].name!r}, not static"
        return np.array([d if isinstance(d, int) else 1 for d in dims], np.int64)
    args = []
    for x in node.inputs:
        got = _angles(x, positions, memo) if x is not None else None
        if isinstance(got, str):
            return got
        args.append(got)
    attrs = node.attributes
    if node.op_type == "Unsqueeze":
        result = np.expand_dims(args[0], tuple(int(a) for a in args[1]))
    elif node.op_type == "Cast":
        result = args[0].astype(ir.DataType(attrs["to"].as_int()).numpy())
    elif node.op_type == "Mul":
        result = args[0] * args[1]
    elif node.op_type == "MatMul":
        result = args[0] @ args[1]
    elif node.op_type == "Transpose":
        perm = attrs.get("perm")
        result = np.transpose(args[0], None if perm is None else list(perm.as_ints()))
    elif node.op_type == "Expand":
        result = np.broadcast_to(args[0], np.broadcast_shapes(args[0].shape, tuple(args[1])))
    elif node.op_type == "Concat":
        result = np.concatenate(args, axis=attrs["axis"].as_int())
    elif node.op_type == "Reshape":
        shape = [d if d != 0 else args[0].shape[i] for i, d in enumerate(args[1].tolist())]
        result = args[0].reshape(shape)
    else:
        result = args[0]
    memo[value] = result
    return result


def rotary_tables(freqs: ir.Value, max_positions: int) -> tuple[np.ndarray, np.ndarray] | str:
    """``(cos_cache, sin_cache)``, ``[max_positions, rotary_dim / 2]``: the angles
    ``freqs`` (``[batch, seq, rotary_dim / 2]``, a function of ``position_ids``)
    evaluated at positions ``0 .. max_positions - 1``; or the reason they cannot be."""
    positions = np.arange(max_positions, dtype=np.int64)[None, :]
    got = _angles(freqs, positions, {})
    if isinstance(got, str):
        return got
    if got.ndim != 3 or got.shape[:2] != (1, max_positions):
        return f"the rotary angles {freqs.name!r} are not [batch, seq, dim] ({got.shape} at batch 1)"
    angles = got[0].astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _row_scale(attention: ir.Value) -> ir.Node | None:
    """The row scale of :mod:`~diag.export.make.rewrite.attention_3d` reading
    ``attention`` (``Mul(attention, Squeeze(rows, [1]))``), or None."""
    uses = attention.uses()
    if len(uses) != 1 or uses[0].node.op_type != "Mul" or uses[0].idx != 0:
        return None
    rows = uses[0].node.inputs[1].producer() if uses[0].node.inputs[1] is not None else None
    return uses[0].node if rows is not None and rows.op_type == "Squeeze" else None


class GroupQueryAttention(pattern.RewriteRuleClassBase):
    """One layer's ``Attention`` with its rotations -> ``GroupQueryAttention`` (see
    the module). ``windows`` maps a layer's index to its ``local_window_size``
    (absent: -1, no window)."""

    def __init__(self, max_positions: int, windows: Mapping[int, int], scaled: bool,
                 prefix: str = ""):  # fmt: skip
        super().__init__(prefix + "GroupQueryAttention" + ("Scaled" if scaled else ""))
        self._max_positions = int(max_positions)
        self._windows = dict(windows)
        self._scaled = scaled
        self._shared: dict = {}

    def pattern(self, op, q3, k3, v3, q_cos, q_sin, k_cos, k_sin, past_key, past_value, rows):
        query = op.RotaryEmbedding(q3, q_cos, q_sin, _allow_other_attributes=True, _outputs=["q_rot"])
        key = op.RotaryEmbedding(k3, k_cos, k_sin, _allow_other_attributes=True, _outputs=["k_rot"])
        attention, present_key, present_value = op.Attention(
            query,
            key,
            v3,
            pattern.Var("mask", can_match_none=True),
            past_key,
            past_value,
            _allow_other_attributes=True,
            _outputs=["attention", "present_key", "present_value"],
        )
        scaled = op.Mul(attention, rows) if self._scaled else attention
        return scaled, present_key, present_value

    def check(self, context, q3, k3, v3, q_cos, q_sin, k_cos, k_sin, past_key, past_value,
              q_rot, k_rot, attention, **_):  # fmt: skip
        result = pattern.MatchResult()
        if not context.output_values:
            return result.fail("the attention does not return the cache")
        node = attention.producer()
        if not self._scaled and _row_scale(attention) is not None:
            # the rules try the Attention before the Mul reading it: the scaled rule's turn
            return result.fail("the attention's rows are scaled: the scaled rule converts it", node)
        for name in ("q_num_heads", "kv_num_heads"):
            if name not in node.attributes:
                return result.fail(f"the attention has no {name} (its inputs are not 3-D)", node)
        if node.attributes.get("qk_matmul_output_mode", ir.AttrInt64("", 0)).as_int() != 0:
            return result.fail("the attention returns its scores (qk_matmul_output_mode)", node)
        for past in (past_key, past_value):
            if not past.is_graph_input():
                return result.fail(f"the past {past.name!r} is computed, not a graph input", past)
        mask = next((v for v in context.graph_or_function.inputs if v.name == N.ATTENTION_MASK), None)
        if mask is None:
            return result.fail(f"the graph has no {N.ATTENTION_MASK!r} input to read lengths from")
        self._shared["mask"] = mask
        for rot in (q_rot, k_rot):
            if "num_heads" not in rot.producer().attributes:
                return result.fail(f"the rotation {rot.name!r} is not on 3-D heads", rot)
        refused = self._check_rotary(result, (q_rot, k_rot), (q_cos, q_sin), (k_cos, k_sin))
        if refused is not None:
            return refused
        if self._scaled and _row_scale(attention) is None:
            return result.fail("the attention is not scaled by Squeeze(rows) (attention_3d's)", node)
        for role, x in (("query", q3), ("key", k3), ("value", v3)):
            if x.shape is None or len(x.shape) != 3:
                return result.fail(f"the {role} {x.name!r} is not known to be 3-D", x)
        return result

    def _check_rotary(self, result, rotations, q_tables, k_tables):
        """The failed ``result`` when the rotations of q and k cannot move inside the
        kernel (partial, other tables for q and k, tables not ``Cos``/``Sin`` of one
        set of angles, angles the tables cannot be evaluated from), else None."""
        for rot in rotations:
            if rot.producer().attributes.get("rotary_embedding_dim", ir.AttrInt64("", 0)).as_int():
                return result.fail(f"the rotation {rot.name!r} is partial (rotary_embedding_dim)", rot)
        if q_tables != k_tables:
            return result.fail("q and k are rotated with different tables", k_tables[0])
        cos, sin = q_tables
        for table, op_type in ((cos, "Cos"), (sin, "Sin")):
            producer = table.producer()
            if producer is None or producer.op_type != op_type:
                return result.fail(f"the rotary table {table.name!r} is not {op_type}(angles)", table)
        if cos.producer().inputs[0] is not sin.producer().inputs[0]:
            return result.fail("cos and sin are not of the same angles", sin)
        tables = self._tables(cos.producer().inputs[0])
        if isinstance(tables, str):
            return result.fail(tables, cos)
        return None

    def setup(self):
        self._shared = {}

    def _tables(self, freqs: ir.Value):
        key = ("tables", freqs)
        if key not in self._shared:
            self._shared[key] = rotary_tables(freqs, self._max_positions)
        return self._shared[key]

    def _layer(self, past_key: ir.Value) -> int:
        """The layer of ``past_key``: its rank among the 4-D graph inputs, halved."""
        graph = past_key.graph
        cache = [v for v in graph.inputs if v.shape is not None and len(v.shape) == 4]
        return cache.index(past_key) // 2

    def _lengths(self, op, mask: ir.Value) -> tuple[ir.Value, ir.Value]:
        """``seqlens_k`` (int32 ``[batch]``, each row's length - 1) and
        ``total_sequence_length`` (int32 scalar, the mask's width), once for all layers."""
        key = ("lengths", mask)
        if key not in self._shared:
            one = op.initializer(ir.tensor(np.array([1], np.int64)), name="gqa_one")
            axis = op.initializer(ir.tensor(np.array(1, np.int64)), name="gqa_axis")
            rows = op.ReduceSum(mask, one, keepdims=0)
            seqlens = op.Cast(op.Sub(rows, one), to=ir.DataType.INT32)
            total = op.Cast(op.Gather(op.Shape(mask), axis, axis=0), to=ir.DataType.INT32)
            self._shared[key] = (seqlens, total)
        return self._shared[key]

    def _caches(self, op, freqs: ir.Value) -> tuple[ir.Value, ir.Value]:
        key = ("caches", freqs)
        if key not in self._shared:
            cos, sin = self._tables(freqs)
            n = sum(1 for k in self._shared if k[0] == "caches")
            self._shared[key] = (
                op.initializer(ir.tensor(cos), name=f"gqa_cos_cache{n or ''}"),
                op.initializer(ir.tensor(sin), name=f"gqa_sin_cache{n or ''}"),
            )
        return self._shared[key]

    def rewrite(self, op, q3, k3, v3, q_cos, past_key, past_value, q_rot, attention, **_):
        attributes = attention.producer().attributes
        return self._group_query_attention(
            op, q3, k3, v3, q_cos, past_key, past_value, q_rot, attributes
        )

    def _group_query_attention(self, op, q3, k3, v3, q_cos, past_key, past_value, q_rot,
                               attributes):  # fmt: skip
        """The ``GroupQueryAttention`` replacing an ``Attention`` of ``attributes``
        (``q_num_heads`` / ``kv_num_heads`` set) on ``q3``, ``k3``, ``v3``."""
        heads = attributes["q_num_heads"].as_int()
        kv_heads = attributes["kv_num_heads"].as_int()
        scale = attributes.get("scale")
        softcap = attributes.get("softcap")
        seqlens, total = self._lengths(op, self._shared["mask"])
        cos_cache, sin_cache = self._caches(op, q_cos.producer().inputs[0])
        split = q3.producer()
        packed = (
            split is not None
            and split.op_type == "Split"
            and list(split.outputs) == [q3, k3, v3]
            and all(len(x.uses()) == 1 for x in (q3, k3, v3))
        )
        qkv = [split.inputs[0], None, None] if packed else [q3, k3, v3]
        interleaved = q_rot.producer().attributes.get("interleaved", ir.AttrInt64("", 0)).as_int()
        head_dim = (q3.shape[2] // heads) if isinstance(q3.shape[2], int) else None
        gqa_attributes = {
            "num_heads": heads,
            "kv_num_heads": kv_heads,
            "do_rotary": 1,
            "rotary_interleaved": interleaved,
            "local_window_size": self._windows.get(self._layer(past_key), -1),
            "scale": scale.as_float() if scale is not None else 1.0 / math.sqrt(head_dim or 1),
            "softcap": softcap.as_float() if softcap is not None else 0.0,
        }
        return op.GroupQueryAttention(
            *qkv, past_key, past_value, seqlens, total, cos_cache, sin_cache,
            **gqa_attributes, _domain=MS_DOMAIN, _outputs=3,
        )  # fmt: skip


def gqa_rules(
    max_positions: int, windows: Mapping[int, int] | None = None
) -> tuple[pattern.RewriteRule, ...]:
    """The rules, with the row scale first: rotary tables of ``max_positions``
    positions, ``windows`` the ``local_window_size`` of each layer by its index
    (absent: no window)."""
    return tuple(
        GroupQueryAttention.rule(max_positions, windows or {}, scaled)
        for scaled in (True, False)
    )
