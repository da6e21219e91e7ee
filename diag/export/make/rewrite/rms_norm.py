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

Example::

    >>> [rule.name for rule in RULES]
    ['RmsNormFusion1', 'RmsNormFusion2']
"""

from __future__ import annotations

from diag.compat.onnxscript_api import rms_normalization_rules

#: the rules, ``Mul(normalized, w)`` then ``Mul(w, normalized)``
RULES = rms_normalization_rules()
