"""RMSNorm -> ``RMSNormalization`` (opset 23): onnxscript's own rules.

transformers' ``LlamaRMSNorm`` (and its copies in most decoders) exports as
``Mul(w, Mul(x, Reciprocal(Sqrt(Add(ReduceMean(Pow(x, 2), [-1]), eps)))))``.
onnxscript ships the rules for exactly this computation, in both orders of the
last product and with the optional casts around it
(a private module of onnxscript, found by
:func:`diag.compat.onnxscript_api.rms_normalization_rules`); the fused node reads
``x`` and ``w`` with ``axis=-1``, the model's ``epsilon`` and ``stash_type`` the
type of ``x``. They are used as they are: they fuse the same norms in every
architecture of diag's zoo and in SmolLM2 as diag's own matcher did.

A norm computed in float32 on a float16 model (gemma2: ``x.float()``, the scale
``1 + w`` in float32) fuses into ``RMSNormalization(x float16, scale float32)``, which
the schema allows (``T`` and ``V``) but ONNX Runtime's expansion of the op refuses
(``Mul`` bound to float16 and float); :class:`MixedTypeNorm` casts ``x`` to the
scale's type first, which the norm does anyway (``stash_type`` float).

Example::

    >>> [rule.name for rule in RULES]
    ['RmsNormFusion1', 'RmsNormFusion2', 'MixedTypeNorm']
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from diag.compat.onnxscript_api import rms_normalization_rules


def _dtype(value: ir.Value) -> ir.DataType | None:
    if value.dtype is None and value.const_value is not None:
        return value.const_value.dtype
    return value.dtype


class MixedTypeNorm(pattern.RewriteRuleClassBase):
    """``RMSNormalization(x, scale)`` with ``x`` and ``scale`` of two float types ->
    ``RMSNormalization(Cast(x, scale's type), scale)``, the same attributes."""

    def pattern(self, op, x, scale):
        return op.RMSNormalization(x, scale, _allow_other_attributes=True, _outputs=["normalized"])

    def check(self, context, x, scale, normalized, **_):
        result = pattern.MatchResult()
        if _dtype(x) is None or _dtype(scale) is None or _dtype(x) == _dtype(scale):
            return result.fail(f"x and scale have one type ({_dtype(x)})")
        return result

    def rewrite(self, op, x, scale, normalized, **_):
        node = normalized.producer()
        cast = op.Cast(x, to=_dtype(scale))
        fused = op.RMSNormalization(cast, scale, **{k: a for k, a in node.attributes.items()})
        fused.producer().metadata_props.update(node.metadata_props)
        return fused


#: the rules, ``Mul(normalized, w)`` then ``Mul(w, normalized)``, then the types aligned
RULES = (*rms_normalization_rules(), MixedTypeNorm.rule())
