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
float16 and bfloat16 first choose another token than float32 (if they do), with the margins
there (:func:`diag.find_divergence`, whose verdict allows for the dtype's rounding),
and the speed of each, torch and ONNX Runtime, measured in turn (medians of a few
rounds, with their spread).

Exports
-------
"""

import copy
import os

import matplotlib.pyplot as plt
import pandas as pd
import torch

import diag
from diag.generation import open_steps
from diag.helpers.timing import alternate, spread_of
from diag.helpers.wrap import wrap_report

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
STEPS = 8 if FAST else 40  # tokens compared between dtypes
SPEED_STEPS = 8 if FAST else 16  # tokens per timed generation
ROUNDS = 3  # each speed is the median of ROUNDS alternated rounds

MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
model, tokenizer = diag.load_pretrained(MODEL)
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
    assert result.validation.ok, f"the {name} export does not compute what torch does"

# %%
# A bfloat16 file, meant for CUDA, is refused on the CPU before it runs, with what to do.
# The refusal reads the file's dtype, not its size: the tiny model of the same
# architecture shows it without one more export of the full model.

tiny, _ = diag.load_pretrained("tiny:llama")
bf16_file = diag.export_causal_lm(tiny, dtype="bfloat16", verify=False)
try:
    diag.onnx_generate(bf16_file, torch.tensor([[1, 2, 3]]), max_new_tokens=2)
except ValueError as exc:
    print(wrap_report(str(exc)))  # wrapped to the page
else:
    raise AssertionError("onnx_generate ran a bfloat16 file on the CPU instead of refusing it")

# %%
# Where each dtype departs from float32
# -------------------------------------
#
# ``model.generate`` in each dtype, greedy, ``STEPS`` tokens, the raw logits kept. A
# dtype may choose float32's tokens all along: the output then says so, and the
# summary below has no step for it.

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
# ``onnx_generate`` on each export, all in turn, round after round
# (:func:`diag.helpers.timing.alternate`), so that a burst of load from another
# process falls on all of them; each speed is the median of ``ROUNDS`` rounds, the
# lowest and the highest round in brackets.

backends = {name: open_steps(result).backend for name, result in exports.items()}
contenders = {}
for name in DTYPES:
    contenders[name, "torch"] = lambda m=models[name]: m.generate(
        ids, max_new_tokens=SPEED_STEPS, do_sample=False, eos_token_id=None
    )
    contenders[name, "onnx"] = lambda b=backends[name]: diag.onnx_generate(
        b, ids, max_new_tokens=SPEED_STEPS, eos_token_id=[]
    )
with torch.no_grad():
    runs = alternate(contenders, rounds=ROUNDS)
speed = {key: spread_of(rs).inverse(SPEED_STEPS) for key, rs in runs.items()}


def departure(name: str, field: str):
    """A field of the dtype's departure from float32 (None for float32 itself)."""
    return getattr(departures[name], field) if name in departures else None


summary = pd.DataFrame(
    [
        {
            "dtype": name,
            "export runs in": "float32" if name == "bfloat16" else name,
            "torch tok/s": f"{speed[name, 'torch']:.3g}",
            "onnx tok/s": f"{speed[name, 'onnx']:.3g}",
            "departs from float32 at step": departure(name, "step"),
            "float32 margin there": departure(name, "reference_margin"),
            "its margin there": departure(name, "other_margin"),
            "near tie": departure(name, "near_tie"),
        }
        for name in DTYPES
    ]
)


def cell(v) -> str:
    """A value of the summary as printed: 3 significant digits, "-" where none."""
    return "-" if v is None or pd.isna(v) else f"{v:.3g}" if isinstance(v, float) else str(v)


print(f"{SPEED_STEPS} new tokens, median (lowest-highest) of {ROUNDS} rounds")
# one column per dtype: the rows would not fit the page's width
print(summary.set_index("dtype").T.map(cell).to_string())

# %%
# The speed of each dtype, torch and ONNX Runtime (tokens/s, higher is better): bars
# at the median, lines from the lowest to the highest round.

fig, ax = plt.subplots(figsize=(7, 4))
names = list(DTYPES)
# torch above onnx in each pair once the axis is inverted below
for offset, side, label in ((-0.2, "torch", "model.generate"), (0.2, "onnx", "onnx_generate")):
    rates = [speed[name, side] for name in names]
    ax.barh(
        [p + offset for p in range(len(names))],
        [r.median for r in rates],
        height=0.4,
        xerr=[[r.median - r.low for r in rates], [r.high - r.median for r in rates]],
        capsize=3,
        label=label,
    )
ax.set_yticks(range(len(names)), names)
ax.invert_yaxis()  # float32 on top, in the table's order
ax.set_xlabel(f"tokens/s, batch 1, median of {ROUNDS} rounds")
ax.set_title(f"{MODEL}: decoding speed by dtype, CPU")
# below the axes: inside, it would hide the end of a bar
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, frameon=False)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_dtypes_speed.png"))
