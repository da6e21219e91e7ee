"""The pieces of onnxscript diag's rewrite rules use that onnxscript does not publish.

:mod:`diag.export.make.rewrite` reuses two of onnxscript's shipped fusions, which live in
private modules (``onnxscript.rewriter.rules.fusion._rms_normalization``,
``_rotary_embedding``), and :mod:`diag.export.make.rewrite.packed_matmul` extends the
matcher (``onnxscript.rewriter.pattern.SimplePatternMatcher``) through its
private methods. A release of onnxscript may move or rename them: they are looked up
here, once, by introspection; when one is missing, the error names the installed
onnxscript and the tested one (``diag/compat/tested_pins.txt``).

Example::

    >>> [rule.name for rule in rms_normalization_rules()]
    ['RmsNormFusion1', 'RmsNormFusion2']
    >>> rotary_embedding23_fusion().__name__
    'RotaryEmbedding23Fusion'
"""

from __future__ import annotations

import importlib
from typing import Any

#: the private module of each shipped fusion diag reuses, and the name it reads there
_FUSIONS = {
    "rms_normalization_rules": "onnxscript.rewriter.rules.fusion._rms_normalization",
    "RotaryEmbedding23Fusion": "onnxscript.rewriter.rules.fusion._rotary_embedding",
}
#: the private methods of SimplePatternMatcher that packed_matmul's matcher calls
MATCHER_METHODS = ("_init_match", "_multi_match")


class OnnxscriptApiError(ImportError):
    """The installed onnxscript lacks a piece diag's rewrite rules use."""


def _missing(what: str) -> OnnxscriptApiError:
    import onnxscript

    from diag.compat.versions import pinned_releases

    tested = pinned_releases().get("onnxscript", "?")
    return OnnxscriptApiError(
        f"{what} is missing in the installed onnxscript {onnxscript.__version__}; diag's "
        f"rewrite rules (diag.export.make.rewrite) are tested with onnxscript {tested}: install "
        f"it (pip install onnxscript=={tested}), or adapt diag/compat/onnxscript_api.py."
    )


def _shipped(name: str) -> Any:
    module_name = _FUSIONS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise _missing(f"the module {module_name}") from None
    if not hasattr(module, name):
        raise _missing(f"{module_name}.{name}")
    return getattr(module, name)


def rms_normalization_rules() -> tuple:
    """onnxscript's ``RMSNormalization`` rules (``RmsNormFusion1``, ``RmsNormFusion2``)."""
    return tuple(_shipped("rms_normalization_rules"))


def rotary_embedding23_fusion() -> type:
    """onnxscript's ``RotaryEmbedding23Fusion`` rule class (opset 23)."""
    return _shipped("RotaryEmbedding23Fusion")


def simple_pattern_matcher() -> type:
    """``onnxscript.rewriter.pattern.SimplePatternMatcher``, checked for the
    private methods (:data:`MATCHER_METHODS`) a subclass's ``match`` calls."""
    from onnxscript.rewriter import pattern

    matcher = getattr(pattern, "SimplePatternMatcher", None)
    if matcher is None:
        raise _missing("onnxscript.rewriter.pattern.SimplePatternMatcher")
    absent = [m for m in MATCHER_METHODS if not callable(getattr(matcher, m, None))]
    if absent:
        raise _missing(f"SimplePatternMatcher.{', .'.join(absent)}")
    return matcher


__all__ = [
    "MATCHER_METHODS",
    "OnnxscriptApiError",
    "rms_normalization_rules",
    "rotary_embedding23_fusion",
    "simple_pattern_matcher",
]
