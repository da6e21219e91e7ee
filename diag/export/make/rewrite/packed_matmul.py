"""The products of one input by several weights -> one product and a ``Split``.

A decoder layer multiplies one hidden state by the q, k and v weights, and another
by the gate and up weights::

    q, k, v = MatMul(x, Wq), MatMul(x, Wk), MatMul(x, Wv)

The rule rewrites it into ``Split(MatMul(x, Concat(Wq, Wk, Wv)))``: a larger
matrix-vector product keeps the memory bus busier than three small ones, and costs
one synchronisation of the threads instead of three. It packs every product of ``x``
by a 2-D initializer that nothing else reads (a tied embedding is left alone: packing
it would copy it), in the order of the graph, at the first of them. The pattern has
one ``MatMul`` per packed product (a rule per group size, up to :data:`MAX_GROUP`);
the matcher looks for the other products among the readers of ``x`` only, where
onnxscript's default matcher would try every combination of ``MatMul`` nodes of the
graph.

Example::

    >>> [rule.name for rule in RULES][:2]
    ['PackedMatMul8', 'PackedMatMul7']
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from diag.compat.onnxscript_api import simple_pattern_matcher

#: the largest group a rule packs (a decoder has 2 or 3)
MAX_GROUP = 8


def weight_refusal(node: ir.Node) -> str | None:
    """Why the weight of the ``MatMul`` ``node`` cannot be packed, or None."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None or not weight.is_initializer() or weight.const_value is None:
        return "its weight is not an initializer"
    if len(weight.const_value.shape) != 2:
        return f"its weight {weight.name!r} is not 2-D"
    if len(weight.uses()) != 1:
        return f"its weight {weight.name!r} is read by {len(weight.uses())} nodes"
    return None


def _kind(node: ir.Node) -> tuple:
    weight = node.inputs[1].const_value
    return weight.shape[0], weight.dtype


class _ProductsOfOneInput(simple_pattern_matcher()):  # type: ignore[misc]
    """Matches the pattern's products against the readers of the root's input only,
    all of them (of the same inner size and type) in the order of the graph (through
    the matcher's private methods: :func:`diag.compat.onnxscript_api.simple_pattern_matcher`
    checks that the installed onnxscript has them)."""

    def __init__(self, graph_pattern) -> None:
        super().__init__(graph_pattern)
        self._order: dict[ir.Node, int] = {}

    def _position(self, graph, nodes: list[ir.Node]) -> list[ir.Node]:
        if any(n not in self._order for n in nodes):
            self._order = {n: i for i, n in enumerate(graph)}
        return sorted(nodes, key=self._order.__getitem__)

    def match(self, model, graph_or_function, node, *, verbose=0, remove_nodes=True,
              tracer=None):  # fmt: skip
        self._tracer = tracer
        self._graph = (
            graph_or_function if isinstance(graph_or_function, ir.Graph) else graph_or_function.graph
        )
        self._init_match(verbose)
        match = self._match
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            return match.fail(f"{node.op_type} is not a MatMul", node)
        x = node.inputs[0]
        refusal = weight_refusal(node)
        group = [
            use.node
            for use in x.uses()
            if use.idx == 0
            and use.node.op_type == "MatMul"
            and use.node.domain in ("", "ai.onnx")
            and weight_refusal(use.node) is None
            and (refusal is not None or _kind(use.node) == _kind(node))
        ]
        # the nodes of a refusal: those a reader debugging an export wants to hear of
        # (diag.export.make.rewrite.explain lists refusals with matched nodes only)
        if refusal is not None:
            if group:
                # a product the others could have been packed with
                match.add_node(node)
                match.add_node(group[0])
                return match.fail(f"not packed with {group[0].name!r}: {refusal}", node)
            return match.fail(f"not packed: {refusal}", node)
        size = len(self.pattern.output_nodes)
        if len(group) < 2:
            return match.fail(f"the only product of {x.name!r} by a weight of its own", node)
        if len(group) != size:
            if len(group) > MAX_GROUP:
                for other in group:
                    match.add_node(other)
            return match.fail(f"{x.name!r} has {len(group)} products, this rule packs {size}")
        group = self._position(graph_or_function, group)
        if group[0] is not node:
            return match.fail(f"the first product of {x.name!r} packs the group", node)
        self._init_match(verbose)
        return self._multi_match(group, check_removable=remove_nodes)


class PackedMatMul(pattern.RewriteRuleClassBase):
    """``MatMul(x, W1), ..., MatMul(x, Wn)`` -> ``Split(MatMul(x, Concat(W1..Wn)))``."""

    def __init__(self, size: int):
        super().__init__(f"PackedMatMul{size}")
        self._size = size

    @classmethod
    def rule(cls, size: int) -> pattern.RewriteRule:
        instance = cls(size)
        return pattern.RewriteRule(
            instance.pattern,
            instance.rewrite,
            instance.check,
            matcher=_ProductsOfOneInput,
            name=instance.name,
        )

    def pattern(self, op, x):
        return tuple(op.MatMul(x, pattern.Var(f"w{i}")) for i in range(self._size))

    def rewrite(self, op, x, **bindings):
        weights = [bindings[f"w{i}"] for i in range(self._size)]
        arrays = [w.const_value.numpy() for w in weights]
        name = f"{weights[0].name}_packed{self._size}"
        packed = op.initializer(ir.tensor(np.concatenate(arrays, axis=1)), name=name)
        sizes = np.array([a.shape[1] for a in arrays], dtype=np.int64)
        split = op.initializer(ir.tensor(sizes), name=f"{name}_split")
        return op.Split(op.MatMul(x, packed), split, axis=-1, _outputs=self._size)


#: the rules, the largest groups first
RULES = tuple(PackedMatMul.rule(size) for size in range(MAX_GROUP, 1, -1))
