"""
.. _l-plot-other-exporters:

Debugging a model another tool exported
=======================================

Most ONNX files people debug were not made by diag. This page takes SmolLM2 through
onnxruntime-genai's model builder (fp32 and int4) and asks of each file what diag asks
of its own exports: does it generate ``model.generate``'s tokens, where does it depart
when it does not, and how fast does it decode. transformers' own exporter joins them
when the page runs with ``DIAG_SLOW_EXPORTS=1`` or on the tiny model (``DIAG_FAST=1``):
on SmolLM2 its export takes minutes, more than this page's share of the build; the
output says which ran. diag detects each file's layout (names, side files, which inputs
exist) and drives it with the same decoding loop as :func:`diag.generate`.

Building the files
------------------
"""

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas
import torch

import diag
from diag.generation import onnx_generate, open_steps
from diag.helpers.timing import alternate, spread_of

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
NEW_TOKENS = 5 if FAST else 12
ROUNDS = 3
# every file of the page (up to a GB on SmolLM2) lives here; the last cell removes it
TMP_DIR = tempfile.TemporaryDirectory(prefix="diag_other_exporters_")
TMP = TMP_DIR.name

MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
model, tokenizer = diag.load_pretrained(MODEL)
model.eval()
hf_folder = os.path.join(TMP, "hf")
model.save_pretrained(hf_folder)
tokenizer.save_pretrained(hf_folder)


def genai_build(precision):
    """onnxruntime-genai's model builder, for the CPU."""
    out = os.path.join(TMP, f"genai-{precision}")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf_folder, "-o", out]
    subprocess.run([*cmd, "-p", precision, "-e", "cpu"], check=True, capture_output=True)
    return out


#: the loggers of torch's exporter that write on every export
TORCH_EXPORT_LOGGERS = [
    "torch.onnx._internal.exporter._registration",
    "torch._export.non_strict_utils",
]


def transformers_export():
    """transformers' exporter: a prefill graph and a decode graph, dynamic shapes
    (two sample prompts, one padded, so that the batch and the mask stay inputs),
    without onnxscript's optimizer (``optimize=False``: with it, the export of SmolLM2
    takes many times longer, and the graph computes the same)."""
    from transformers.exporters import OnnxConfig, OnnxExporter
    from transformers.utils import logging as hf_logging

    out = os.path.join(TMP, "transformers")
    sample = {
        "input_ids": torch.tensor([[1, 5, 7, 9], [2, 1, 4, 6]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]),
    }
    config = OnnxConfig(dynamic=True, optimize=False)
    verbosity = hf_logging.get_verbosity()
    # its log says it is experimental and which releases it was tested with, torch's
    # exporter logs the ops it skips and prints its progress: this page checks the
    # file it writes instead
    hf_logging.set_verbosity_error()
    torch_logs = [logging.getLogger(name) for name in TORCH_EXPORT_LOGGERS]
    levels = [log.level for log in torch_logs]
    for log in torch_logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # the exporter calls a pytree API torch deprecates (LeafSpec): a FutureWarning
            # of the libraries, which the docs build would otherwise turn into an error
            warnings.filterwarnings("ignore", category=FutureWarning)
            OnnxExporter().export_for_generation(model, sample, config).save_pretrained(out)
    finally:
        hf_logging.set_verbosity(verbosity)
        for log, level in zip(torch_logs, levels, strict=True):
            log.setLevel(level)
    return out


begin = time.perf_counter()
folders = {"genai fp32": genai_build("fp32"), "genai int4": genai_build("int4")}
if FAST or os.environ.get("DIAG_SLOW_EXPORTS") == "1":
    folders["transformers"] = transformers_export()
else:
    print("transformers' exporter: not run (minutes on SmolLM2; DIAG_SLOW_EXPORTS=1 adds it)")
print(f"built {', '.join(folders)} in {time.perf_counter() - begin:.0f} s")

# %%
# What each file is
# -----------------
#
# :func:`diag.inspect_onnx` (``python -m diag inspect PATH``) reads a file without
# running it: the layout found, the attention operator, the quantized matrix products
# and the weights. The genai files use ``GroupQueryAttention``, have no
# ``position_ids`` and a symbolic head size that ``genai_config.json`` gives; the int4
# one replaces the float matrix products by ``MatMulNBits``.

for name, folder in folders.items():
    print(f"===== {name}")
    print(diag.inspect_onnx(folder))

# %%
# Tokens against model.generate
# -----------------------------
#
# Greedy, on one prompt: the fp32 files give ``model.generate``'s tokens (asserted);
# the int4 one may depart from them, the table says at which step.

ids = tokenizer("def print_prime(n):", return_tensors="pt").input_ids
expected = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None)
backends = {name: open_steps(folder).backend for name, folder in folders.items()}
rows = []
for name, backend in backends.items():
    got = onnx_generate(backend, ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None)
    same = (got[0, ids.shape[1] :] == expected[0, ids.shape[1] :]).tolist()
    # the step of the first different token, "-" when all are the same
    first = str(same.index(False)) if False in same else "-"
    rows.append({"model": name, "layout": backend.layout.name, "same tokens": all(same),
                 "first different": first})  # fmt: skip
print(pandas.DataFrame(rows).to_string(index=False))
float_files = [r for r in rows if "int4" not in r["model"]]
assert all(r["same tokens"] for r in float_files), f"a float file departs: {float_files}"

# %%
# Per-step agreement
# ------------------
#
# :func:`diag.compare_teacher_forced` feeds both sides the same tokens (torch's greedy
# ones) and compares their logits at every step: the fp32 files agree to rounding,
# the int4 one is further off, by an error that can flip the argmax where torch
# hesitates (the counts below say how often it did in this run).

agreement = {}
for name, folder in folders.items():
    df = diag.compare_teacher_forced(model, folder, ids, max_new_tokens=NEW_TOKENS)
    agreement[name] = df
    print(f"{name:>13}: argmax agrees on {int(df['argmax_agree'].sum())}/{len(df)} steps, "
          f"max |diff| {df['max_abs_diff'].max():.3g}")  # fmt: skip

fig, ax = plt.subplots(figsize=(7, 3.5))
for name, df in agreement.items():
    ax.semilogy(df["step"], df["max_abs_diff"].clip(lower=1e-7), marker="o", label=name)
ax.set_xlabel("step")
ax.set_ylabel("max |logits torch - onnx|")
ax.set_title(f"{MODEL}: teacher-forced logits against the torch model")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_other_exporters_agreement.png"))

# %%
# Where int4 departs
# ------------------
#
# :func:`diag.first_divergence` generates with both sides and stops at the first
# differing token, with both sides' candidates and their margins.

div = diag.first_divergence(model, folders["genai int4"], ids, max_new_tokens=NEW_TOKENS,
                            tokenizer=tokenizer)  # fmt: skip
print(div if div else f"no divergence in {NEW_TOKENS} tokens")

# %%
# Speed
# -----
#
# The same prompt: diag driving each file, and for the genai files
# onnxruntime-genai's own ``Generator``, all in turn, round after round
# (:func:`diag.helpers.timing.alternate`); each speed is the median of ``ROUNDS``
# rounds, the lowest and the highest round in brackets
# (``bench/bench_other_exporters.py`` measures more).

import onnxruntime_genai as og  # noqa: E402


def genai_generate(folder):
    m = og.Model(folder)
    total = ids.shape[1] + NEW_TOKENS

    def run():
        params = og.GeneratorParams(m)
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        gen = og.Generator(m, params)
        gen.append_tokens(ids.numpy().astype(np.int32))
        while not gen.is_done():
            gen.generate_next_token()

    return run


contenders = {}
for name, backend in backends.items():
    contenders[name, "diag onnx_generate"] = lambda b=backend: onnx_generate(
        b, ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None
    )
    if name.startswith("genai"):
        contenders[name, "genai Generator"] = genai_generate(folders[name])
runs = alternate(contenders, rounds=ROUNDS)
rates = {key: spread_of(rs).inverse(NEW_TOKENS) for key, rs in runs.items()}
speed = pandas.DataFrame(
    [{"model": m, "driver": d, "tokens/s": rate.median, "shown": f"{rate:.1f}"}
     for (m, d), rate in rates.items()]
)  # fmt: skip
print(f"tokens/s, median (lowest-highest) of {ROUNDS} rounds, {NEW_TOKENS} new tokens")
print(speed.pivot(index="model", columns="driver", values="shown").fillna("-").to_string())

fig, ax = plt.subplots(figsize=(7, 3.5))
table = speed.pivot(index="model", columns="driver", values="tokens/s")
table.plot.bar(ax=ax, rot=0)
ax.set_ylabel("tokens/s (batch 1, greedy)")
ax.set_title(f"{MODEL}: decoding speed, median of {ROUNDS} rounds")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_other_exporters_speed.png"))

# %%
# Clean up
# --------
#
# The built folders go with the temporary directory.

del backends, contenders, runs
TMP_DIR.cleanup()
