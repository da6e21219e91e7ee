"""A static cache layer (``TensorScatter`` + ``Attention``) -> ``GroupQueryAttention``
on the shared buffer.

The static export (:mod:`diag.export.make.static_cache`) writes a layer as::

    q = Transpose(Reshape(q3, [b, s, heads, d]), [0, 2, 1, 3])        # k, v alike
    present_key = TensorScatter(past_key, RotaryEmbedding(k, cos, sin), at, axis=2)
    present_value = TensorScatter(past_value, v, at, axis=2)
    y = Attention(RotaryEmbedding(q, cos, sin), present_key, present_value, mask)
    y = Mul(y, rows)                                                    # optional
    y3 = Reshape(Transpose(y, [0, 2, 1, 3]), [b, s, heads * d])

where ``past_key`` / ``past_value`` are ``[batch, kv_heads, max_length, head_dim]``
buffers bound as their own ``present`` (:mod:`diag.ort.cache`). The rule
rewrites it into ``GroupQueryAttention(packed, "", "", past_key, past_value,
seqlens_k, total_sequence_length, cos_cache, sin_cache)``, ``do_rotary=1``: with past
and present one buffer of ``max_length`` positions, ONNX Runtime's kernel shares it
(past_present_share_buffer), writes each row's new positions after its own length
(``seqlens_k``, from ``attention_mask``) and reads only those ``seqlens_k + 1``
positions: a decode step does not pay for ``max_length``. ``total_sequence_length`` is
the step's last write position plus one (``cache_position[-1] + 1``), so that the
prefill is the kernel's first prompt. The rotary tables, the lengths, the packed
product and the refusals are :mod:`~diag.export.make.rewrite.group_query_attention`'s.

Example::

    >>> [rule.name for rule in static_gqa_rules(max_positions=64)]
    ['StaticGroupQueryAttentionScaled', 'StaticGroupQueryAttention']
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from diag.contract import names as N
from diag.export.make.rewrite.attention_3d import _heads, _num_heads
from diag.export.make.rewrite.group_query_attention import GroupQueryAttention

_HEADS_FIRST = [0, 2, 1, 3]


class StaticGroupQueryAttention(GroupQueryAttention):
    """One static-cache layer -> ``GroupQueryAttention`` on the shared buffers."""

    def __init__(self, max_positions: int, windows: Mapping[int, int], scaled: bool):
        super().__init__(max_positions, windows, scaled, prefix="Static")

    def pattern(self, op, q3, k3, v3, q_shape, k_shape, v_shape, q_cos, q_sin, k_cos, k_sin,
                past_key, past_value, key_at, value_at, rows, out_shape):  # fmt: skip
        query = op.RotaryEmbedding(_heads(op, q3, q_shape, "q_view"), q_cos, q_sin,
                                   _allow_other_attributes=True, _outputs=["q_rot"])  # fmt: skip
        key = op.RotaryEmbedding(_heads(op, k3, k_shape, "k_view"), k_cos, k_sin,
                                 _allow_other_attributes=True, _outputs=["k_rot"])  # fmt: skip
        value = _heads(op, v3, v_shape, "v_view")
        present_key = op.TensorScatter(past_key, key, key_at, _allow_other_attributes=True)
        present_value = op.TensorScatter(past_value, value, value_at, _allow_other_attributes=True)
        attention = op.Attention(
            query, present_key, present_value, pattern.Var("mask", can_match_none=True),
            _allow_other_attributes=True, _outputs=["attention"],
        )  # fmt: skip
        scaled = op.Mul(attention, rows) if self._scaled else attention
        merged = op.Reshape(
            op.Transpose(scaled, perm=_HEADS_FIRST), out_shape, _allow_other_attributes=True
        )
        return merged, present_key, present_value

    def check(self, context, q3, k3, v3, q_view, k_view, v_view, q_cos, q_sin, k_cos, k_sin,
              past_key, past_value, q_rot, k_rot, attention, **_):  # fmt: skip
        result = pattern.MatchResult()
        node = attention.producer()
        heads = [_num_heads(v) for v in (q_view, k_view, v_view)]
        if None in heads:
            return result.fail("the number of heads of q, k or v is not static", q_view)
        if heads[1] != heads[2]:
            return result.fail(f"keys have {heads[1]} heads, values {heads[2]}", v_view)
        for past in (past_key, past_value):
            if not past.is_graph_input():
                return result.fail(f"the buffer {past.name!r} is computed, not a graph input", past)
        for name, present in zip(("key", "value"), context.output_values[1:], strict=True):
            readers = {use.node for use in present.uses()}
            if readers - {node}:
                return result.fail(f"the {name} buffer written is read by another node", present)
        graph = context.graph_or_function
        inputs = {v.name: v for v in graph.inputs}
        if N.ATTENTION_MASK not in inputs or N.CACHE_POSITION not in inputs:
            return result.fail(f"the graph lacks {N.ATTENTION_MASK!r} or {N.CACHE_POSITION!r}")
        self._shared["mask"] = inputs[N.ATTENTION_MASK]
        self._shared["cache_position"] = inputs[N.CACHE_POSITION]
        self._shared["heads"] = heads
        refused = self._check_rotary(result, (q_rot, k_rot), (q_cos, q_sin), (k_cos, k_sin))
        return result if refused is None else refused

    def _lengths(self, op, mask: ir.Value) -> tuple[ir.Value, ir.Value]:
        """``seqlens_k`` from the mask (its zeros: padding and positions not written
        yet) and ``total_sequence_length`` = ``cache_position[-1] + 1``."""
        key = ("lengths", mask)
        if key not in self._shared:
            seqlens, _ = super()._lengths(op, mask)
            last = op.initializer(ir.tensor(np.array(-1, np.int64)), name="gqa_last")
            one = op.initializer(ir.tensor(np.array(1, np.int64)), name="gqa_one_scalar")
            written = op.Add(op.Gather(self._shared["cache_position"], last, axis=0), one)
            self._shared[key] = (seqlens, op.Cast(written, to=ir.DataType.INT32))
        return self._shared[key]

    def rewrite(self, op, q3, k3, v3, q_cos, past_key, past_value, q_rot, attention, **_):
        node = attention.producer()
        heads, kv_heads, _ = self._shared["heads"]
        attributes = dict(node.attributes)
        attributes["q_num_heads"] = ir.AttrInt64("q_num_heads", heads)
        attributes["kv_num_heads"] = ir.AttrInt64("kv_num_heads", kv_heads)
        return self._group_query_attention(
            op, q3, k3, v3, q_cos, past_key, past_value, q_rot, attributes
        )


def static_gqa_rules(
    max_positions: int, windows: Mapping[int, int] | None = None
) -> tuple[pattern.RewriteRule, ...]:
    """The rules of a static cache export, with the row scale first (see
    :func:`~diag.export.make.rewrite.group_query_attention.gqa_rules`)."""
    return tuple(
        StaticGroupQueryAttention.rule(max_positions, windows or {}, scaled)
        for scaled in (True, False)
    )
