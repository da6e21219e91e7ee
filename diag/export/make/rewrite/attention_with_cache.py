"""The cache concatenation moved into ``Attention`` (opset 23).

The exporter writes a layer's cache update beside the attention::

    present_key = Concat(past_key, key, axis=2)
    present_value = Concat(past_value, value, axis=2)
    y = Attention(query, present_key, present_value, mask)

where ``past_key`` / ``past_value`` are graph inputs and the concatenations are the
``present`` outputs. The rule rewrites it into ``Attention(query, key, value, mask,
past_key, past_value)``, whose second and third outputs are the ``present`` tensors:
one kernel, no separate copy of the cache. It refuses (and says why) when a past is
computed rather than fed, when the concatenation is along another axis or read by
another node, or when the attention already has a past.

Example::

    >>> import onnx_ir as ir
    >>> from diag.export.make.rewrite import fuse_decoder
    >>> def value(name, shape):
    ...     return ir.Value(name=name, shape=ir.Shape(shape),
    ...                     type=ir.TensorType(ir.DataType.FLOAT))
    >>> q, k, v = (value(n, [1, 2, 1, 4]) for n in "qkv")
    >>> pk, pv = value("past_key", [1, 2, 3, 4]), value("past_value", [1, 2, 3, 4])
    >>> ck = ir.node("Concat", [pk, k], attributes={"axis": 2})
    >>> cv = ir.node("Concat", [pv, v], attributes={"axis": 2})
    >>> att = ir.node("Attention", [q, ck.outputs[0], cv.outputs[0]])
    >>> outputs = [att.outputs[0], ck.outputs[0], cv.outputs[0]]
    >>> g = ir.Graph([q, k, v, pk, pv], outputs, nodes=[ck, cv, att], opset_imports={"": 23})
    >>> fuse_decoder(ir.Model(g, ir_version=10), ["attention_past"])
    {'attention_past': 1}
    >>> [(n.op_type, len(n.inputs), len(n.outputs)) for n in g]
    [('Attention', 6, 3)]
"""

from __future__ import annotations

from onnxscript.rewriter import pattern


class AttentionWithCache(pattern.RewriteRuleClassBase):
    """``Attention(q, Concat(past_k, k), Concat(past_v, v), mask)`` ->
    ``Attention(q, k, v, mask, past_k, past_v)`` with the ``present`` outputs."""

    def pattern(self, op, query, key, value, past_key, past_value, key_axis, value_axis):
        present_key = op.Concat(past_key, key, axis=key_axis)
        present_value = op.Concat(past_value, value, axis=value_axis)
        attention = op.Attention(
            query,
            present_key,
            present_value,
            pattern.Var("mask", can_match_none=True),
            _allow_other_attributes=True,
            _outputs=["attention"],
        )
        return attention, present_key, present_value

    def check(self, context, past_key, past_value, key_axis, value_axis, **_):
        result = pattern.MatchResult()
        for past in (past_key, past_value):
            if not past.is_graph_input():
                return result.fail(f"the past {past.name!r} is computed, not a graph input", past)
        for axis in (key_axis, value_axis):
            if axis.value not in (2, -2):
                return result.fail(f"the cache is concatenated along axis {axis.value}, not 2")
        root = context.root
        for present in context.output_values[1:]:
            readers = {use.node for use in present.uses()}
            if readers != {root}:
                names = sorted(n.name or n.op_type for n in readers - {root})
                return result.fail(f"{present.name!r} is also read by {names}", present)
        return result

    def rewrite(self, op, query, key, value, past_key, past_value, mask, attention, **_):
        attributes = attention.producer().attributes
        return op.Attention(
            query, key, value, mask, past_key, past_value, **attributes, _outputs=3
        )


#: the rule
RULES = (AttentionWithCache.rule(),)

