"""diag.compat.onnxscript_api: onnxscript's private pieces, found once, or a clear error."""

import onnxscript
import pytest
from onnxscript.rewriter import pattern

from diag.compat import onnxscript_api
from diag.compat.versions import pinned_releases


def test_finds_the_shipped_fusions_and_the_matcher():
    rules = onnxscript_api.rms_normalization_rules()
    assert [r.name for r in rules] == ["RmsNormFusion1", "RmsNormFusion2"]
    assert all(isinstance(r, pattern.RewriteRule) for r in rules)
    assert issubclass(onnxscript_api.rotary_embedding23_fusion(), pattern.RewriteRuleClassBase)
    assert onnxscript_api.simple_pattern_matcher() is pattern.SimplePatternMatcher


def test_a_moved_module_names_both_releases(monkeypatch):
    moved = dict(onnxscript_api._FUSIONS, RotaryEmbedding23Fusion="onnxscript.no_such_module")
    monkeypatch.setattr(onnxscript_api, "_FUSIONS", moved)
    with pytest.raises(onnxscript_api.OnnxscriptApiError) as info:
        onnxscript_api.rotary_embedding23_fusion()
    message = str(info.value)
    assert "the module onnxscript.no_such_module is missing" in message
    assert f"installed onnxscript {onnxscript.__version__}" in message
    assert f"tested with onnxscript {pinned_releases()['onnxscript']}" in message


def test_a_missing_matcher_method_is_named(monkeypatch):
    monkeypatch.setattr(onnxscript_api, "MATCHER_METHODS", ("_init_match", "_no_such_method"))
    with pytest.raises(onnxscript_api.OnnxscriptApiError, match=r"SimplePatternMatcher\._no_such_method"):
        onnxscript_api.simple_pattern_matcher()
