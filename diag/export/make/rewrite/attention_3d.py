"""``Attention`` and ``RotaryEmbedding`` on ``[batch, seq, heads * head_dim]`` tensors.

A transformers attention splits each projection into heads and merges them back::

    q = Transpose(Reshape(q3, [b, s, heads, d]), [0, 2, 1, 3])    # k, v alike
    q = RotaryEmbedding(q, cos, sin)                                # q and k, optional
    y = Attention(q, k, v, mask, past_k, past_v)
    y = Mul(y, rows)                                                # optional, rows [b, 1, s, 1]
    y3 = Reshape(Transpose(y, [0, 2, 1, 3]), [b, s, heads * d])

The opset-23 ops read 3-D tensors directly (``q_num_heads``/``kv_num_heads`` on
``Attention``, ``num_heads`` on ``RotaryEmbedding``), so the rule rewrites it into
``Attention(RotaryEmbedding(q3), RotaryEmbedding(k3), v3, ...)``, and the optional
row scale (diag's patch for fully masked rows) into ``Mul(y, Squeeze(rows, [1]))``,
one ``Squeeze`` for all layers: eight nodes a layer disappear. Four rules: with the
cache outputs of :mod:`~diag.export.make.rewrite.attention_with_cache` or without, with
the row scale (``Mul(y, rows)``, the order the exporter writes) or without.

Example::

    >>> [rule.name for rule in RULES]
    ['Attention3dWithCacheScaled', 'Attention3dWithCache', 'Attention3dScaled', 'Attention3d']
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

_HEADS_FIRST = [0, 2, 1, 3]


def _heads(op, x3, shape, name: str):
    """``[b, s, heads * d]`` -> ``[b, heads, s, d]``; the 4-D view is called ``name``."""
    view = op.Reshape(x3, shape, _allow_other_attributes=True, _outputs=[name])
    return op.Transpose(view, perm=_HEADS_FIRST)


def _maybe_rotated(op, heads, cos, sin, name: str):
    rotated = op.RotaryEmbedding(heads, cos, sin, _allow_other_attributes=True, _outputs=[name])
    return pattern.OrValue([rotated, heads])


def _num_heads(view: ir.Value) -> int | None:
    shape = view.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[2], int):
        return None
    return shape[2]


class Attention3d(pattern.RewriteRuleClassBase):
    """The attention of a layer on 3-D tensors (see the module)."""

    def __init__(self, with_cache: bool, scaled: bool):
        name = "Attention3d" + ("WithCache" if with_cache else "") + ("Scaled" if scaled else "")
        super().__init__(name)
        self._with_cache = with_cache
        self._scaled = scaled
        self._squeezed: dict[ir.Value, ir.Value] = {}

    def pattern(self, op, q3, k3, v3, q_shape, k_shape, v_shape, q_cos, q_sin, k_cos, k_sin,
                rows, out_shape):  # fmt: skip
        query = _maybe_rotated(op, _heads(op, q3, q_shape, "q_view"), q_cos, q_sin, "q_rot")
        key = _maybe_rotated(op, _heads(op, k3, k_shape, "k_view"), k_cos, k_sin, "k_rot")
        value = _heads(op, v3, v_shape, "v_view")
        outputs = op.Attention(
            query,
            key,
            value,
            pattern.Var("mask", can_match_none=True),
            pattern.Var("past_key", can_match_none=True),
            pattern.Var("past_value", can_match_none=True),
            _allow_other_attributes=True,
            _outputs=["attention", "present_key", "present_value"] if self._with_cache else ["attention"],
        )
        attention = outputs[0] if self._with_cache else outputs
        # the row scale is a rule apart rather than an OrValue: a backtracking choice
        # would hide the reason of a refusal behind "none of the alternatives matched"
        scaled = op.Mul(attention, rows) if self._scaled else attention
        merged = op.Reshape(
            op.Transpose(scaled, perm=_HEADS_FIRST), out_shape, _allow_other_attributes=True
        )
        return (merged, outputs[1], outputs[2]) if self._with_cache else merged

    def check(self, context, q3, k3, v3, q_view, k_view, v_view, rows, **_):
        result = pattern.MatchResult()
        if not context.output_values:
            # onnxscript's matcher stops without a failure on a node with fewer outputs
            # than the pattern binds: here an Attention without the cache outputs
            return result.fail("the attention does not return the cache")
        heads = []
        for role, flat, view in (("query", q3, q_view), ("key", k3, k_view), ("value", v3, v_view)):
            if flat.shape is None or len(flat.shape) != 3:
                return result.fail(f"the {role} {flat.name!r} is not known to be 3-D", flat)
            if _num_heads(view) is None:
                return result.fail(
                    f"the number of {role} heads ({view.name!r}: {view.shape}) is not static", view
                )
            heads.append(_num_heads(view))
        if heads[1] != heads[2]:
            return result.fail(f"keys have {heads[1]} heads, values {heads[2]}", v_view)
        merged = context.output_values[0]
        if merged.shape is None or len(merged.shape) != 3:
            return result.fail(f"the merged heads {merged.name!r} are not known to be 3-D")
        if rows is not None:
            shape = rows.shape
            if shape is None or len(shape) != 4 or shape[1] != 1 or shape[3] != 1:
                return result.fail(f"{rows.name!r} does not scale rows ([b, 1, s, 1])", rows)
        return result

    def setup(self):
        self._squeezed = {}

    def _squeeze(self, op, rows: ir.Value) -> ir.Value:
        """``rows`` as ``[b, s, 1]``, computed once for all layers."""
        if rows not in self._squeezed:
            axes = op.initializer(ir.tensor(np.array([1], np.int64)), name=f"{rows.name}_axes")
            self._squeezed[rows] = op.Squeeze(rows, axes)
        return self._squeezed[rows]

    def rewrite(self, op, q3, k3, v3, q_view, k_view, attention, rows, **bindings):
        q_heads, kv_heads = _num_heads(q_view), _num_heads(k_view)
        flat = []
        for x3, heads, name in ((q3, q_heads, "q_rot"), (k3, kv_heads, "k_rot")):
            rotation = bindings.get(name)
            if rotation is None:
                flat.append(x3)
                continue
            node = rotation.producer()
            attributes = {**node.attributes, "num_heads": heads}
            flat.append(op.RotaryEmbedding(x3, *node.inputs[1:], **attributes))
        node = attention.producer()
        inputs = [*flat, v3, *node.inputs[3:]]
        attributes = {**node.attributes, "q_num_heads": q_heads, "kv_num_heads": kv_heads}
        outputs = op.Attention(*inputs, **attributes, _outputs=len(node.outputs))
        result = outputs[0] if len(node.outputs) > 1 else outputs
        if rows is not None:
            result = op.Mul(result, self._squeeze(op, rows))
        return (result, outputs[1], outputs[2]) if self._with_cache else result


#: the rules: with the cache outputs first (after attention_with_cache), then without;
#: with the row scale, then without
RULES = tuple(
    Attention3d.rule(with_cache=cache, scaled=scaled)
    for cache in (True, False)
    for scaled in (True, False)
)
