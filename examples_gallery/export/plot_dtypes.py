"""
.. _l-plot-dtypes:

float32, float16, bfloat16: what the dtype does to the tokens
=============================================================

Most published checkpoints are bfloat16 or float16. ``diag.export_causal_lm(model,
dtype=...)`` exports a model in ``"float32"``, ``"float16"`` or ``"bfloat16"``; by
default in the model's own dtype, except bfloat16 on the CPU: ONNX Runtime's CPU
provider has no bfloat16 kernel for ``MatMul`` (nor ``Add``, ``Mul``, ``Attention``...),
so a bfloat16 model is exported as float32 (with a warning saying so), and a bfloat16
file is refused by :func:`diag.onnx_generate` on the CPU with the fix, not ONNX
Runtime's raw ``NOT_IMPLEMENTED``.

The page runs the same prompt through the model in each dtype: the step where
float16 and bfloat16 first choose another token than float32, with the margins
there (:func:`diag.find_divergence`, whose verdict allows for the dtype's rounding),
and the speed of each, torch and ONNX Runtime, measured alternately (medians).

Exports
-------
"""

import copy
import os
import statistics
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

import diag
from diag.generation import open_steps
from diag.helpers.wrap import wrap_report

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
STEPS = 8 if FAST else 40
REPEAT = 3

model, tokenizer = diag.load_pretrained("tiny:llama" if FAST else "smollm2-135m-instruct")
model.eval()
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
models = {name: copy.deepcopy(model).to(dtype) for name, dtype in DTYPES.items()}

# the bfloat16 model runs on the CPU as float32 (its values are float32 values: the
# file computes what the bfloat16 weights say, in float32); asked for explicitly here
exports = {
    "float32": diag.export_causal_lm(models["float32"]),
    "float16": diag.export_causal_lm(models["float16"]),
    "bfloat16": diag.export_causal_lm(models["bfloat16"], dtype="float32"),
}
for name, result in exports.items():
    print(f"{name:<9} export: {result.filename}")
    print(result.validation.table().splitlines()[-1])

# %%
# A bfloat16 file, meant for CUDA, is refused on the CPU before it runs, with what to do.

bf16_file = diag.export_causal_lm(models["float32"], dtype="bfloat16", verify=False)
try:
    diag.onnx_generate(bf16_file, torch.tensor([[1, 2, 3]]), max_new_tokens=2)
except ValueError as exc:
    print(wrap_report(str(exc)))  # wrapped to the page

# %%
# Where each dtype departs from float32
# -------------------------------------
#
# ``model.generate`` in each dtype, greedy, the raw logits kept.

prompt = "Write a Python function that checks whether a number is prime."
ids = tokenizer.apply_chat_template(
    [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
)
ids = ids["input_ids"] if hasattr(ids, "keys") else ids


def generate(m: torch.nn.Module):
    with torch.no_grad():
        out = m.generate(
            ids, max_new_tokens=STEPS, do_sample=False, eos_token_id=None,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    return out.sequences[:, ids.shape[1] :].tolist(), [t.float() for t in out.logits]


runs = {name: generate(m) for name, m in models.items()}
reference_tokens, reference_logits = runs["float32"]
departures = {}
for name in ("float16", "bfloat16"):
    tokens, logits = runs[name]
    div = diag.find_divergence(
        reference_tokens, tokens, reference_logits, logits,
        names=("float32", name), tokenizer=tokenizer, dtype=DTYPES[name],
    )  # fmt: skip
    departures[name] = div
    print(f"--- {name}: {div}")

# %%
# Speed
# -----
#
# Greedy decoding at batch 1, eos ignored: ``model.generate`` in each dtype and
# ``onnx_generate`` on each export, one after the other, ``REPEAT`` rounds; the table
# keeps the median of each.

backends = {name: open_steps(result).backend for name, result in exports.items()}
for backend in backends.values():  # warm-up: first-call allocations
    diag.onnx_generate(backend, ids, max_new_tokens=2, eos_token_id=[])
seconds: dict[tuple[str, str], list[float]] = {}
for _ in range(REPEAT):
    for name in DTYPES:
        begin = time.perf_counter()
        with torch.no_grad():
            models[name].generate(ids, max_new_tokens=STEPS, do_sample=False, eos_token_id=None)
        seconds.setdefault((name, "torch"), []).append(time.perf_counter() - begin)
        begin = time.perf_counter()
        diag.onnx_generate(backends[name], ids, max_new_tokens=STEPS, eos_token_id=[])
        seconds.setdefault((name, "onnx"), []).append(time.perf_counter() - begin)

summary = pd.DataFrame(
    [
        {
            "dtype": name,
            "export runs in": "float32" if name == "bfloat16" else name,
            "torch tok/s": STEPS / statistics.median(seconds[(name, "torch")]),
            "onnx tok/s": STEPS / statistics.median(seconds[(name, "onnx")]),
            "departs from float32 at step": departures[name].step if name in departures else None,
            "float32 margin there": departures[name].reference_margin
            if name in departures
            else None,
            "its margin there": departures[name].other_margin if name in departures else None,
            "near tie": departures[name].near_tie if name in departures else None,
        }
        for name in DTYPES
    ]
)


def cell(v) -> str:
    """A value of the summary as printed: 3 significant digits, "-" where none."""
    return "-" if v is None or pd.isna(v) else f"{v:.3g}" if isinstance(v, float) else str(v)


# one column per dtype: the rows would not fit the page's width
print(summary.set_index("dtype").T.map(cell).to_string())

# %%
# The speed of each dtype, torch and ONNX Runtime (tokens/s, higher is better).

fig, ax = plt.subplots(figsize=(7, 3))
positions = range(len(summary))
ax.barh([p + 0.2 for p in positions], summary["torch tok/s"], height=0.4, label="model.generate")
ax.barh([p - 0.2 for p in positions], summary["onnx tok/s"], height=0.4, label="onnx_generate")
ax.set_yticks(list(positions), summary["dtype"])
ax.set_xlabel("tokens/s, batch 1 (median)")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_dtypes_speed.png"))
