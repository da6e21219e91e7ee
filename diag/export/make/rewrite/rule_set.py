"""The fusions of a decoder, in the order they run, and :func:`fuse_decoder`.

Each fusion is a tuple of rules of onnxscript's rewriter
(``onnxscript.rewriter.pattern.RewriteRule``), tried in order at every node;
:func:`fuse_decoder` applies them fusion after fusion, so that a later one reads
what the earlier ones wrote (``attention_3d`` flattens the ``Attention`` of
``attention_past`` and the ``RotaryEmbedding`` of ``rotary``).

Example::

    >>> list(FUSIONS)
    ['rms_norm', 'rotary', 'attention_past', 'attention_3d', 'packed_matmul', 'gather_positions', 'skip_norm']
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
from onnx_ir.passes import common as common_passes
from onnxscript.rewriter import pattern

from diag.export.make.rewrite import (
    attention_3d,
    attention_with_cache,
    gather_positions,
    packed_matmul,
    rms_norm,
    rotary,
    skip_norm,
)

#: the opset where RMSNormalization, RotaryEmbedding and Attention appeared
MIN_OPSET = 23

#: the fusions, in the order they run (each can rely on the ones before)
FUSIONS: dict[str, tuple[pattern.RewriteRule, ...]] = {
    "rms_norm": rms_norm.RULES,
    "rotary": rotary.RULES,
    "attention_past": attention_with_cache.RULES,
    "attention_3d": attention_3d.RULES,
    "packed_matmul": packed_matmul.RULES,
    "gather_positions": gather_positions.RULES,
    "skip_norm": skip_norm.RULES,
}
#: fusions that emit ops of opset 23
OPSET23 = frozenset({"rms_norm", "rotary", "attention_past", "attention_3d", "skip_norm"})


def opset_of(model: ir.Model) -> int:
    """The model's version of the default ONNX domain."""
    return int(model.graph.opset_imports.get("", model.opset_imports.get("", 0)))


def selected(fusions: Sequence[str] | None) -> list[str]:
    """The names in ``fusions`` (None: all of :data:`FUSIONS`), checked."""
    names = list(FUSIONS) if fusions is None else list(fusions)
    unknown = [n for n in names if n not in FUSIONS]
    if unknown:
        raise ValueError(f"unknown fusions {unknown}; known: {list(FUSIONS)}")
    return names


def apply_fusion(model: ir.Model, name: str) -> int:
    """Applies the rules of the fusion ``name`` to ``model``; returns how many fired."""
    count = pattern.RewriteRuleSet(FUSIONS[name]).apply_to_model(model)
    if name == "rotary" and count:
        # the rotary rule makes the cos/sin tables once per rotation: one pair for all
        common_passes.CommonSubexpressionEliminationPass()(model)
    if name == "skip_norm" and count:
        skip_norm.drop_unread_outputs(model)
    return count


def fuse_decoder(model: ir.Model, fusions: Sequence[str] | None = None) -> dict[str, int]:
    """Applies :data:`FUSIONS` (or the ones named) to ``model`` in place; returns how
    many times each one fired. The opset-23 fusions are skipped on older opsets
    (0 in the counts). :func:`diag.export.make.rewrite.explain` says why a rule did not fire."""
    names = selected(fusions)
    opset = opset_of(model)
    counts = {}
    for name in names:
        if name in OPSET23 and opset < MIN_OPSET:
            counts[name] = 0
            continue
        counts[name] = apply_fusion(model, name)
    if any(counts.values()):
        # what the fused patterns read and nothing else does (the 4-D cos/sin tables)
        common_passes.RemoveUnusedNodesPass()(model)
    return counts
