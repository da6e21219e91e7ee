"""Regression tests that compare torch and ONNX, with failures that explain themselves.

* :func:`assert_same_tokens`: two sides (torch model, ONNX file / folder / session)
  generate from the same prompts; a failure names, per prompt, the first divergent
  step, both sides' top candidates and margins, the near-tie verdict and the first
  decoder layer beyond tolerance.
* :func:`assert_logits_close`: the logits within export validation's noise-aware
  tolerance; a failure names the worst logit.
* :func:`record` / :func:`assert_matches_record`: golden records (a small JSON file of
  tokens and top logits) and the check that a model still generates them.
* :func:`perturb_weight`: noise on one module's weight of an ONNX model, the broken
  export a test should catch.
* :mod:`diag.testing.plugin`: a pytest plugin, off unless asked
  (``-p diag.testing.plugin``), with the ``diag_record`` fixture.

Example::

    import diag.testing
    diag.testing.assert_same_tokens(model, "model.onnx", ["def f(x):"], tokenizer=tok)
    diag.testing.record("model.onnx", [[5, 6, 7]], "golden.json", max_new_tokens=10)
    diag.testing.assert_matches_record("model.onnx", "golden.json")
"""

from diag.testing.logits import assert_logits_close
from diag.testing.perturb import perturb_weight
from diag.testing.record_check import assert_matches_record
from diag.testing.records import RecordError, load_record, record
from diag.testing.tokens import assert_same_tokens

__all__ = [
    "RecordError",
    "assert_logits_close",
    "assert_matches_record",
    "assert_same_tokens",
    "load_record",
    "perturb_weight",
    "record",
]
