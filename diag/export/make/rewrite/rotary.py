"""Rotary embedding -> ``RotaryEmbedding`` (opset 23): onnxscript's rule.

``apply_rotary_pos_emb`` (non-interleaved) exports as ``x * cos + rotate_half(x) *
sin`` with ``cos = Unsqueeze(Cos(Concat(f, f)), [1])``: onnxscript's
``RotaryEmbedding23`` rule (in a private module of onnxscript, found by
:func:`diag.compat.onnxscript_api.rotary_embedding23_fusion`) matches exactly that computation on a 4-D ``x`` (static
heads and head size, ``x`` split into two equal halves) and rewrites it into
``RotaryEmbedding(x, Cos(f), Sin(f))``, the tables of the half-size frequencies.

One change to its rewrite: the fused node has no ``num_heads``, an attribute the
operator needs for 3-D inputs only (:mod:`diag.export.make.rewrite.attention_3d` sets it
when it flattens the heads), so the graph stays the one diag wrote before. The rule
makes one ``Cos``/``Sin`` pair per rotation (and none where the tables are shared by
the batch: a model traced without position ids, the op wants one table per row);
:func:`diag.export.make.rewrite.fuse_decoder` merges them afterwards (one pair for all layers).

Example::

    >>> [rule.name for rule in RULES]
    ['RotaryEmbedding23']
"""

from __future__ import annotations

from diag.compat.onnxscript_api import rotary_embedding23_fusion


class RotaryEmbedding4d(rotary_embedding23_fusion()):  # type: ignore[misc]
    """onnxscript's ``RotaryEmbedding23`` (pattern and checks), rewritten without
    ``num_heads`` on its 4-D input."""

    def check(self, op, x, freqs, **kwargs):
        result = super().check(op, x, freqs=freqs, **kwargs)
        if not result:
            return result
        # RotaryEmbedding wants tables of x's batch: a model given no position ids
        # computes them once for the batch (first dimension 1), which the op refuses
        # on a batch of several rows; that rotation stays as it is
        first = freqs.shape[0] if freqs.shape is not None and len(freqs.shape) else None
        if first == 1 and x.shape is not None and x.shape[0] != 1:
            return result.fail("the rotary tables are shared by the batch (no position ids)")
        return result

    def rewrite(self, op, x, freqs, **_):
        return op.RotaryEmbedding(x, op.Cos(freqs), op.Sin(freqs), interleaved=0)


#: the rule
RULES = (RotaryEmbedding4d.rule(),)
