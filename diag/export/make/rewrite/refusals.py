"""Why the fusions did not fire where they did not: :func:`explain`.

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> x = ir.Value(name="x", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> ids = ir.Value(name="ids", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64))
    >>> w1, w2 = (ir.Value(name=n, const_value=ir.tensor(np.ones((4, 2), dtype=np.float32)))
    ...           for n in ("w1", "w2"))
    >>> # w1 is also read by a Gather (a tied embedding): packing it would copy it
    >>> a = ir.node("MatMul", [x, w1], name="a")
    >>> b = ir.node("MatMul", [x, w2], name="b")
    >>> gather = ir.node("Gather", [w1, ids], name="embed")
    >>> outputs = [a.outputs[0], b.outputs[0], gather.outputs[0]]
    >>> g = ir.Graph([x, ids], outputs, nodes=[a, b, gather], initializers=[w1, w2],
    ...              opset_imports={"": 23})
    >>> explain(ir.Model(g, ir_version=10), ["packed_matmul"])
    {'packed_matmul': ["a (MatMul): not packed with 'b': its weight 'w1' is read by 2 nodes [PackedMatMul8]"]}
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
from onnxscript import optimizer
from onnxscript.rewriter import pattern

from diag.export.make.rewrite.rule_set import (
    FUSIONS,
    MIN_OPSET,
    OPSET23,
    apply_fusion,
    opset_of,
    selected,
)


def _pattern_size(rule: pattern.RewriteRule) -> float:
    """Nodes per output node: a pattern of several products is as deep as one; a rule
    may say its own (``near_miss_size``: a pattern of two nodes, one of them common)."""
    if getattr(rule, "near_miss_size", None) is not None:
        return float(rule.near_miss_size)
    target = getattr(rule, "_target_pattern", None)
    if target is None:
        return 2.0
    return target.num_nodes() / max(1, len(target.output_nodes))


class _Refusals(pattern.MatchingTracer):
    """Records the near misses: the whole pattern matched and a check refused, or at
    least half of its nodes matched before one did not (every ``Mul`` of a graph is
    the first node of an RMSNorm that is not there: not worth a line)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[tuple[ir.Node, str, str]] = []
        self.fused: set[ir.Node] = set()

    def log(self, rule, container, node, match_result, status) -> None:
        if status == pattern.MatchStatus.SUCCESS:
            self.fused.update(match_result.nodes)
        elif (
            status == pattern.MatchStatus.CONDITION_FAILED
            or 2 * len(match_result.nodes) >= _pattern_size(rule)
        ):
            reason = match_result.reason or "the pattern did not match"
            self.refused.append((node, reason, rule.name))


def explain(model: ir.Model, fusions: Sequence[str] | None = None) -> dict[str, list[str]]:
    """For each fusion (all of :data:`~diag.export.make.rewrite.FUSIONS` or the ones
    named), the places where one of its rules matched most of its pattern and
    refused, each as ``"node (op): reason [rule]"``, in the order of the graph.
    The fusions run one after the other on a copy of ``model`` as
    :func:`~diag.export.make.rewrite.fuse_decoder` runs them, so that the reasons of a
    fusion are about the graph it sees; ``model`` is left as it is. A node that
    another rule of the same fusion fuses is not listed."""
    names = selected(fusions)
    work = model.clone()
    old_opset = opset_of(work) < MIN_OPSET
    reasons: dict[str, list[str]] = {}
    for name in names:
        if name in OPSET23 and old_opset:
            reasons[name] = [f"opset {opset_of(work)} < {MIN_OPSET}: not tried"]
            continue
        tracer = _Refusals()
        # matches only: a rewrite with a tracer would build its nodes all the same,
        # and a node built reads its inputs (their uses would change the next match)
        optimizer.basic_constant_propagation(work.graph)
        for node in work.graph:
            for rule in FUSIONS[name]:
                rule.match(work, work.graph, node, tracer=tracer,
                           check_nodes_are_removable=rule.remove_nodes)  # fmt: skip
        lines: dict[tuple[ir.Node, str], str] = {}
        for node, reason, rule in tracer.refused:
            # several rules of a fusion often refuse a node for one reason: said once
            if node not in tracer.fused and (node, reason) not in lines:
                lines[node, reason] = f"{node.name or '?'} ({node.op_type}): {reason} [{rule}]"
        reasons[name] = list(lines.values())
        apply_fusion(work, name)
    return reasons
