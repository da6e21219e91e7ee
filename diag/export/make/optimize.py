"""The onnxscript optimizer, without its one rule that costs minutes on a decoder.

:func:`optimize_model` runs the passes of ``onnxscript.optimizer.optimize_ir``
(inlining, constant folding, the default rewrite rules, dead code removal, constants
lifted to initializers, deduplicated initializers, common subexpression elimination)
in the same order, except the rewrite rule ``SlicesSplit``: it matches pairs of
``Slice`` nodes, and a decoder has four per layer (rotary embedding, cache), so on
a real model (SmolLM2, 30 layers) it takes most of the optimisation time
(``bench/bench_export.py`` times the optimisation) while rewriting nothing (the slices of a
decoder never split one tensor into two halves the rule recognises). The result is
otherwise the same graph.

When the installed onnxscript no longer exposes the pieces this needs, it falls back
to ``onnxscript.optimizer.optimize_ir`` (slower, same graph).

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> x = ir.Value(name="x", shape=ir.Shape([2]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> a = ir.node("Cast", [x], attributes={"to": 1})
    >>> b = ir.node("Cast", [a.outputs[0]], attributes={"to": 1})
    >>> model = ir.Model(ir.Graph([x], b.outputs, nodes=[a, b], opset_imports={"": 18}), ir_version=10)
    >>> optimize_model(model)
    >>> len(list(model.graph)) < 2
    True
"""

from __future__ import annotations

import onnx_ir as ir

# rewrite rules left out, by name, and why
SKIPPED_RULES = {
    "SlicesSplit": "quadratic in the number of Slice nodes, never fires on a decoder",
}


def _rules() -> list | None:
    try:
        from onnxscript import rewriter

        rules = list(rewriter._DEFAULT_REWRITE_RULES)
    except (ImportError, AttributeError):
        return None
    return [r for r in rules if getattr(r, "name", None) not in SKIPPED_RULES]


def optimize_model(model: ir.Model, num_iterations: int = 2) -> None:
    """Optimizes ``model`` in place (see the module documentation)."""
    rules = _rules()
    try:
        from onnx_ir.passes import common as common_passes
        from onnxscript import rewriter
        from onnxscript.optimizer import _constant_folding
    except ImportError:
        rules = None
    if rules is None:
        from onnxscript.optimizer import optimize_ir

        optimize_ir(model, num_iterations=num_iterations)
        return
    loop = ir.passes.PassManager(
        [
            _constant_folding.FoldConstantsPass(
                shape_inference=True,
                input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
            ),
            rewriter.RewritePass(rules),
            common_passes.RemoveUnusedNodesPass(),
            common_passes.RemoveUnusedFunctionsPass(),
            common_passes.RemoveUnusedOpsetsPass(),
        ],
        steps=num_iterations,
        early_stop=True,
    )
    passes = ir.passes.Sequential(
        common_passes.InlinePass(),
        loop,
        common_passes.RemoveUnusedNodesPass(),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.LiftSubgraphInitializersToMainGraphPass(),
        common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(),
        common_passes.OutputFixPass(),
        common_passes.NameFixPass(),
    )
    passes(model)
