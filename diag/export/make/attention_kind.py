"""The ``attention=`` option of :func:`diag.export_causal_lm`: which op computes attention.

* ``"onnx"`` (the default): the opset-23 ``Attention`` the fusions write
  (:data:`diag.export.make.rewrite.FUSIONS`), left padding, :data:`diag.contract.DIAG_LAYOUT`;
* ``"gqa"``: ONNX Runtime's ``com.microsoft.GroupQueryAttention`` with the rotary
  inside and the packed q/k/v product as its input
  (:mod:`diag.export.make.rewrite.group_query_attention`), right padding,
  :data:`diag.contract.GQA_LAYOUT` (the metadata entry
  :data:`~diag.contract.metadata.ATTENTION_METADATA` says so, and the drivers move a
  left-padded prompt's padding after its tokens). ONNX Runtime's CPU kernel scores
  only each row's real keys (the opset-23 one scores every key).

A model the rewrite cannot convert (no rotary, a partial rotary, rotary angles that are
not a function of ``position_ids`` alone...) is refused at export time with the reason
of each layer it refused: an export asked for ``"gqa"`` is never silently left on the
slow path. Sliding windows go to ``local_window_size`` (``sliding_window``: measured
token for token against ``model.generate`` on the zoo's mistral-sw8, where
``sliding_window - 1`` departs), soft caps to ``softcap`` (gemma2's attention is not
fused into ``Attention`` by the opset-23 fusions yet: refused).

The option's values are checked by the plan
(:func:`diag.export.plan.option_checks.check_attention`).

Example::

    >>> gqa_metadata()["attention"]
    '{"op": "GroupQueryAttention", "padding": "right"}'
"""

from __future__ import annotations

import json

import onnx_ir as ir
import torch
from onnx_ir.passes import common as common_passes
from onnxscript.rewriter import pattern

from diag.contract.metadata import ATTENTION_METADATA
from diag.export.make.rewrite.group_query_attention import gqa_rules
from diag.export.make.rewrite.group_query_attention_static import static_gqa_rules
from diag.export.make.rewrite.refusals import _Refusals


def gqa_metadata() -> dict[str, str]:
    """The metadata entry of a ``GroupQueryAttention`` export
    (:data:`~diag.contract.metadata.ATTENTION_METADATA`): what the drivers read.

    >>> gqa_metadata()
    {'attention': '{"op": "GroupQueryAttention", "padding": "right"}'}
    """
    return {ATTENTION_METADATA: json.dumps({"op": "GroupQueryAttention", "padding": "right"})}


class GroupQueryAttentionError(ValueError):
    """``attention="gqa"`` asked for a model the rewrite does not convert."""


def sliding_windows(model: torch.nn.Module) -> dict[int, int]:
    """``local_window_size`` of each sliding-window layer, by its index."""
    from diag.models.cache_layout import cache_layout

    window = getattr(model.config, "sliding_window", None)
    layers = cache_layout(model).layers
    return {i: int(window) for i, layer in enumerate(layers) if window and "Sliding" in layer.kind}


def max_positions(model: torch.nn.Module, max_length: int | None = None) -> int:
    """The positions of the rotary tables: the static buffers' length, else the
    model's ``max_position_embeddings``."""
    if max_length is not None:
        return int(max_length)
    found = getattr(model.config, "max_position_embeddings", None)
    if not found:
        raise GroupQueryAttentionError(
            f"{type(model).__name__}'s config has no max_position_embeddings: the rotary "
            "tables of GroupQueryAttention need a length; export with cache='static', "
            "max_length=N."
        )
    return int(found)


def to_group_query_attention(
    model_ir: ir.Model, model: torch.nn.Module, max_length: int | None = None
) -> int:
    """Rewrites every layer's attention of the fused ``model_ir`` (exported from
    ``model``; ``max_length``: a static cache export's buffers) into
    ``GroupQueryAttention``, in place; returns how many. Raises
    :class:`GroupQueryAttentionError` with the reasons when an opset-23 ``Attention``
    is left."""
    # a static cache: the buffers of max_length positions are past and present at once
    make = gqa_rules if max_length is None else static_gqa_rules
    rules = make(max_positions(model, max_length), sliding_windows(model))
    count = pattern.RewriteRuleSet(rules).apply_to_model(model_ir)
    # the 4-D mask, the row scale and the rotary angles of position_ids: read by nothing now
    common_passes.RemoveUnusedNodesPass()(model_ir)
    left = [n for n in model_ir.graph if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
    if not left and not count:
        raise GroupQueryAttentionError(
            f"attention='gqa': the fusions left no opset-23 Attention in {type(model).__name__}'s "
            "graph to convert (diag.export.make.rewrite.explain(model_ir) says why they did not "
            "fire); export it with attention='onnx' (the default)."
        )
    if left:
        # the reasons: the rules matched again, without rewriting (what explain does)
        tracer = _Refusals()
        for node in list(model_ir.graph):
            for rule in rules:
                rule.match(model_ir, model_ir.graph, node, tracer=tracer)
        reasons = sorted({f"{node.name or node.op_type}: {why}" for node, why, _ in tracer.refused})
        raise GroupQueryAttentionError(
            f"attention='gqa': {type(model).__name__} keeps {len(left)} opset-23 Attention "
            f"node(s) ({count} converted); the rewrite refused: {reasons or ['no attention matched']}. "
            "Export it with attention='onnx' (the default)."
        )
    return count


__all__ = [
    "GroupQueryAttentionError",
    "gqa_metadata",
    "max_positions",
    "sliding_windows",
    "to_group_query_attention",
]
