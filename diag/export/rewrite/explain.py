"""Why the fusions did not fire where they did not: :func:`explain`.

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> x = ir.Value(name="x", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> w = ir.Value(name="w", const_value=ir.tensor(np.ones((4, 2), dtype=np.float32)))
    >>> a = ir.node("MatMul", [x, w], name="proj")
    >>> g = ir.Graph([x], a.outputs, nodes=[a], initializers=[w], opset_imports={"": 23})
    >>> explain(ir.Model(g, ir_version=10), ["packed_matmul"])
    {'packed_matmul': ["proj (MatMul): the only product of 'x' by a weight of its own [PackedMatMul8]"]}
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
from onnxscript.rewriter import pattern

from diag.export.rewrite.rule_set import FUSIONS, MIN_OPSET, OPSET23, opset_of, selected


class _Refusals(pattern.MatchingTracer):
    """Records every refused match that got past the first node of its pattern."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[tuple[ir.Node, str, str]] = []
        self.fused: set[ir.Node] = set()

    def log(self, rule, container, node, match_result, status) -> None:
        if status == pattern.MatchStatus.SUCCESS:
            self.fused.add(node)
        elif match_result is not None and len(match_result.nodes) > 0:
            reason = match_result.reason or "the pattern did not match"
            self.refused.append((node, reason, rule.name))


def explain(model: ir.Model, fusions: Sequence[str] | None = None) -> dict[str, list[str]]:
    """For each fusion (all of :data:`~diag.export.rewrite.FUSIONS` or the ones
    named), the places where one of its rules matched part of its pattern and
    refused, each as ``"node (op): reason [rule]"``, in the order of the graph.
    The fusions run one after the other on a copy of ``model`` as
    :func:`~diag.export.rewrite.fuse_decoder` runs them, so that the reasons of a
    fusion are about the graph it sees; ``model`` is left as it is. A place where
    another rule of the same fusion fired is not listed."""
    names = selected(fusions)
    work = model.clone()
    old_opset = opset_of(work) < MIN_OPSET
    reasons: dict[str, list[str]] = {}
    for name in names:
        if name in OPSET23 and old_opset:
            reasons[name] = [f"opset {opset_of(work)} < {MIN_OPSET}: not tried"]
            continue
        rules = pattern.RewriteRuleSet(FUSIONS[name])
        tracer = _Refusals()
        rules.apply_to_model(work, tracer=tracer)
        lines: dict[tuple[ir.Node, str], str] = {}
        for node, reason, rule in tracer.refused:
            # several rules of a fusion often refuse a node for one reason: said once
            if node not in tracer.fused and (node, reason) not in lines:
                lines[node, reason] = f"{node.name or '?'} ({node.op_type}): {reason} [{rule}]"
        reasons[name] = list(lines.values())
        rules.apply_to_model(work)
    return reasons
