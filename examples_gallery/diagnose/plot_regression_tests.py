"""
.. _l-plot-regression-tests:

Regression tests for an exported model
======================================

After every upgrade of transformers, torch or onnxruntime, and after every
re-export, a team asks: does the exported model still generate the same tokens,
and if not, where, and is it rounding or a bug? :mod:`diag.testing` turns that
question into tests whose failures answer it:

* :func:`diag.testing.assert_same_tokens`: the torch model and the ONNX file
  generate from the same prompts; a failure names, per prompt, the first
  divergent step, both sides' best candidates with their margins, whether
  rounding explains it, and the first decoder layer beyond tolerance;
* :func:`diag.testing.assert_logits_close`: the logits within the noise-aware
  tolerance of export validation;
* the ``diag_record`` fixture of the pytest plugin :mod:`diag.testing.plugin`:
  a golden record (tokens and top logits in a small JSON file) written once with
  ``pytest --diag-update-records``, checked on every later run.

This page writes such a test file, runs it with pytest on a good export, then on
an export broken on purpose (one weight of one decoder layer changed in the ONNX
file), and prints what a user reads.

The export
----------
"""

import os
import tempfile

import onnx
import pytest

import diag

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"

model, tokenizer = diag.load_pretrained(MODEL)
model.eval()
good = diag.export_causal_lm(model).filename
print("exported:", good)

# %%
# The test file
# -------------
#
# Three tests, each a few lines. The model and the export come from the
# environment here, so that the same file runs on the good and on the broken
# export; a project would write its own paths. The plugin is off unless asked:
# ``pytest_plugins = ["diag.testing.plugin"]`` in the root ``conftest.py`` (as
# here) or ``pytest -p diag.testing.plugin`` turns it on (a test module cannot:
# pytest reads its options before it imports the tests).

TEST_FILE = """
import os

import pytest

import diag
import diag.testing

PROMPTS = ["def print_prime(n):", "The capital of France is"]


@pytest.fixture(scope="module")
def torch_model():
    model, tokenizer = diag.load_pretrained(os.environ["MODEL"])
    return model.eval(), tokenizer


def test_same_tokens(torch_model):
    model, tokenizer = torch_model
    diag.testing.assert_same_tokens(model, os.environ["EXPORT"], PROMPTS,
                                    tokenizer=tokenizer, max_new_tokens=12)


def test_logits_close(torch_model):
    model, tokenizer = torch_model
    diag.testing.assert_logits_close(model, os.environ["EXPORT"], PROMPTS, tokenizer=tokenizer)


def test_golden_record(torch_model, diag_record):
    diag_record(os.environ["EXPORT"], PROMPTS, tokenizer=torch_model[1], max_new_tokens=12)
"""

# the test file, its record and the broken copy of the model; the last cell removes it
tests_dir = tempfile.TemporaryDirectory(prefix="diag_regression_")
folder = tests_dir.name
test_path = os.path.join(folder, "test_export.py")
with open(test_path, "w") as f:
    f.write(TEST_FILE)
with open(os.path.join(folder, "conftest.py"), "w") as f:
    f.write('pytest_plugins = ["diag.testing.plugin"]\n')


def run_pytest(export, *options):
    """Runs pytest on the test file against ``export``; returns its exit code."""
    os.environ.update(MODEL=MODEL, EXPORT=export)
    # pytest inside a script warns that the plugins imported before it (anyio, by
    # transformers) cannot be rewritten: true, and harmless here
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return pytest.main([test_path, "-q", "--tb=short", "-p", "no:cacheprovider", *quiet, *options])


# %%
# A run that passes
# -----------------
#
# The first run writes the golden record (``--diag-update-records``, next to the
# test file in ``records/``); the record is then committed with the tests. A
# second run, without the option, checks the export against it.

print("exit code:", run_pytest(good, "--diag-update-records"))
print("exit code:", run_pytest(good))
record_file = os.path.join(folder, "records", "test_golden_record.json")
content = diag.testing.load_record(record_file)
print("the record keeps:", sorted(content))
print("versions:", content["versions"])
print("first step of prompt 0 (token id, logit):", content["rows"][0]["top"][0][:3])

# %%
# A broken export
# ---------------
#
# The weight of the ``down_proj`` projection of decoder layer 1 gets some noise,
# in the ONNX file only, the way a faulty conversion or a corrupted file would
# look (the dynamo exporter stores on every node the module it comes from, which
# is how :func:`diag.testing.perturb_weight` finds the weight).

LAYER = 1
proto = onnx.load(good)
target = diag.testing.perturb_weight(proto, f"layers.{LAYER}.mlp.down_proj", scale=0.05)
print("perturbed:", target)
broken = os.path.join(folder, "broken", "model.onnx")
os.makedirs(os.path.dirname(broken))
onnx.save(proto, broken, save_as_external_data=not FAST, location="model.onnx.data")
del proto

# %%
# The same tests on it. Each failure says what a user needs to know without
# opening a debugger: ``test_same_tokens`` gives, per prompt, the step where the
# tokens part, both sides' five best candidates, the margins, a verdict (not
# rounding: the logits differ by far more than float32 noise), and the first
# stage beyond tolerance, decoder layer 1; ``test_logits_close`` names the
# worst logit; ``test_golden_record`` the step that changed and what differs
# from the record's environment (here the weights of the file).

print("exit code:", run_pytest(broken))

# %%
# The layers, stage by stage
# --------------------------
#
# The layer named in the message, as :func:`diag.localize_layer` sees it on the
# first prompt: the stages before layer 1 agree, layer 1 is the first beyond the
# tolerance, every later stage inherits its error.

ids = tokenizer(["def print_prime(n):"], return_tensors="pt").input_ids
report = diag.localize_layer(model, broken, ids)
ax = diag.plot_layers(report, title=f"{MODEL}: first stage beyond tolerance: {report.culprit}")
ax.figure.tight_layout()
ax.figure.savefig(os.path.join(OUT, "plot_regression_tests_layers.png"))
print(report.culprit)
assert report.culprit_layer == LAYER, f"localize_layer blamed {report.culprit}, not layer {LAYER}"

# %%
# Clean up
# --------
#
# The test file, the record and the broken copy go with their temporary directory.

tests_dir.cleanup()
