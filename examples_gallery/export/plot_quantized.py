"""
.. _l-plot-quantized:

What int4 does to the tokens
============================

On a CPU, the fast way to run a small LLM is 4-bit weights: a decode step reads
every weight once, and int4 weights are 8 times lighter than float32.
``diag.export_causal_lm(model, quantize="int4")`` makes such an export with ONNX
Runtime's own quantizer (``MatMulNBits``: blocks of 32 weights along the input
dimension, one scale each). But the tokens change: how much, and where?
:func:`diag.quantization_report` answers against the float32 torch model, with
teacher forcing (both sides read the same tokens: top-1 agreement, KL, top-5
overlap), free-running generation (the first step where the tokens part, with
both sides' candidates and margins) and the perplexity of a fixed text.

The page measures, when the documentation is built: the speed, the agreement and
the file size side by side, the first divergence, and the trade-offs of the
options of :class:`diag.QuantizeOptions`: ONNX Runtime's ``accuracy_level`` (4: the
activations are quantized to int8 inside the matrix product, fast; 0: computed in
float32), the lm_head (the largest matrix of a small model) kept in 8 bits, and the
tied embedding reading the lm_head's quantized table (one table in the file instead
of a float one: the size of onnxruntime-genai's int4 build). ``bench/bench_quantized.py``
measures more settings (block size, symmetric or not, int8 for all) against
onnxruntime-genai's int4 build.

Exports
-------
"""

import os
import time

import matplotlib.pyplot as plt
import pandas as pd

import diag
from diag.generation import open_steps
from diag.helpers.timing import alternate, spread_of

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
STEPS = 8 if FAST else 24
ROUNDS = 3
MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"

model, tokenizer = diag.load_pretrained(MODEL)
model.eval()

# every export is cached (the float one too: the quantized ones are made from it)
exports = {
    "float32": diag.export_causal_lm(model),
    "int4 (accuracy_level 4)": diag.export_causal_lm(model, quantize="int4"),
    "int4 (accuracy_level 0)": diag.export_causal_lm(
        model, quantize=diag.QuantizeOptions(bits=4, accuracy_level=None)
    ),
    "int4, lm_head int8": diag.export_causal_lm(
        model, quantize=diag.QuantizeOptions(bits=4, lm_head_bits=8)
    ),
    "int4, embedding shared": diag.export_causal_lm(
        model, quantize=diag.QuantizeOptions(bits=4, embedding=True)
    ),
}
sizes = {}
for name, result in exports.items():
    sizes[name] = (
        sum(
            os.path.getsize(p)
            for p in (result.filename, result.filename + ".data")
            if os.path.exists(p)
        )
        / 2**20
    )
    print(
        f"{name:<24} {sizes[name]:6.1f} MiB  {os.path.basename(os.path.dirname(result.filename))}"
    )

# %%
# The validation of a quantized export says that it is one: it checks the relative
# difference to torch with a tolerance made for quantization, not float32 rounding.

print(exports["int4 (accuracy_level 4)"].validation.table())

# %%
# Speed
# -----
#
# Greedy decoding at batch 1, eos ignored, one session per export made beforehand.
# The exports run in turn, round after round (:func:`diag.helpers.timing.alternate`),
# so that a burst of load from another program slows all of them alike; each speed
# is the median of ``ROUNDS`` rounds, the lowest and the highest round in brackets.

prompt = "Write a Python function that checks whether a number is prime."
ids = tokenizer.apply_chat_template(
    [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
)
ids = ids["input_ids"] if hasattr(ids, "keys") else ids
backends = {name: open_steps(result.filename).backend for name, result in exports.items()}
runs = alternate(
    {
        name: (
            lambda b=backend: diag.onnx_generate(
                b, ids, max_new_tokens=STEPS, eos_token_id=[], return_result=True
            )
        )
        for name, backend in backends.items()
    },
    rounds=ROUNDS,
)
speed = {
    name: spread_of(rs, lambda r: r.result.decode_tokens_per_second) for name, rs in runs.items()
}
print(f"decode tokens/s, median (lowest-highest) of {ROUNDS} rounds:")
for name, value in speed.items():
    print(f"  {name:<24} {value:.1f}")
ratio = speed["int4 (accuracy_level 4)"].median / speed["float32"].median
print(f"int4 (accuracy_level 4) decodes {ratio:.2f}x as fast as float32 in this run")

# %%
# Agreement
# ---------
#
# The report runs both comparisons on each prompt against float32 torch.

prompts = [
    ids[0].tolist(),
    tokenizer("def fibonacci(n):").input_ids,
]
begin = time.perf_counter()
reports = {
    name: diag.quantization_report(
        model, result, prompts, tokenizer=tokenizer, max_new_tokens=STEPS
    )
    for name, result in exports.items()
    if name != "float32"
}
print(f"reports: {time.perf_counter() - begin:.1f}s")
rows = [
    {
        "export": name,
        "tok/s": speed[name].median,
        "MiB": sizes[name],
        "top-1": r.summary["top1_agreement"],
        "top-5": r.summary["top5_overlap"],
        "mean KL": r.summary["mean_kl"],
        "diverges at": r.summary["first_divergent_step"],
        "perplexity": r.perplexity["onnx"],
    }
    for name, r in reports.items()
]
rows.append({"export": "float32", "tok/s": speed["float32"].median, "MiB": sizes["float32"],
             "top-1": 1.0, "top-5": 1.0, "mean KL": 0.0,
             "perplexity": next(iter(reports.values())).perplexity["torch"]})  # fmt: skip
summary = pd.DataFrame(rows).set_index("export")
# "diverges at": the first step where the free-running tokens leave torch's ("-": never)
summary["diverges at"] = [
    "-" if pd.isna(v) else str(int(v)) for v in summary["diverges at"]
]  # fmt: skip
print("speed and size:")
print(summary[["tok/s", "MiB"]].to_string(float_format=lambda v: f"{v:.1f}"))
print("\nagreement with float32 torch:")
print(
    summary[["top-1", "top-5", "mean KL", "diverges at", "perplexity"]].to_string(
        float_format=lambda v: f"{v:.3g}"
    )
)

# %%
# Speed and agreement side by side: the trade-offs of the settings.

fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.5))
names = list(summary.index)
low = [speed[n].median - speed[n].low for n in names]
high = [speed[n].high - speed[n].median for n in names]
left.barh(names, summary["tok/s"], xerr=[low, high], capsize=3, color="#4c72b0")
left.set_xlabel(f"decode tokens/s, batch 1\n(median, lowest-highest of {ROUNDS} rounds)")
middle.barh(names, summary["top-1"], color="#55a868")
middle.set_xlim(0, 1.05)
middle.set_xlabel("teacher-forced top-1 agreement\nwith float32 torch")
middle.set_yticks([])
right.barh(names, summary["MiB"], color="#c44e52")
right.set_xlabel("file size, MiB")
right.set_yticks([])
fig.suptitle(f"{MODEL}: int4 settings against float32")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_quantized_speed.png"))

# %%
# The first divergence
# --------------------
#
# Where the free-running int4 tokens leave torch's, both sides' best candidates and
# margins: a small torch margin is a hesitation that int4's noise flips.

int4 = reports["int4 (accuracy_level 4)"]
print(int4.divergences[0])
cols = ["top1_agreement", "mean_kl", "worst_kl", "first_divergent_step",
        "torch_token", "onnx_token", "torch_margin", "onnx_margin"]  # fmt: skip
# one column per prompt (the prompts are listed above, "all" sums them up)
per_prompt = int4.table[cols].set_axis([*(f"prompt {i}" for i in range(len(prompts))), "all"])
print(per_prompt.T.map(lambda v: f"{v:.3g}" if isinstance(v, float) else v).to_string())

left, right = int4.plot(title=f"{MODEL}, int4 (accuracy_level 4) against float32 torch")
left.figure.tight_layout()
left.figure.savefig(os.path.join(OUT, "plot_quantized_report.png"))
