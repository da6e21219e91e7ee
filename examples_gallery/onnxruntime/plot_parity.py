"""
.. _l-plot-parity:

How close are the ONNX logits? Step by step along a generation
==============================================================

The exported model computes the same function as the PyTorch model, but not with
the same kernels: ONNX Runtime fuses operators, orders the additions of its
matrix products differently, computes the softmax its own way. The logits differ
in the last digits. This page measures by how much, at every step of one greedy
generation, and compares it with what the difference would have to reach to
change a token: the gap between the two most probable tokens (the *margin*).

Both backends are asked for their raw logits at each step
(``output_logits=True``); greedy decoding with the same tokens means both see the
same inputs at every step, so the differences do not accumulate through the
choices.

Generate with both backends
---------------------------
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas
import torch

import diag
from diag.helpers import max_diff, string_type

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
MAX_NEW_TOKENS = 16 if FAST else 60

MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
model, tokenizer = diag.load_pretrained(MODEL)
model.eval()
messages = [
    {"role": "user", "content": "Write a Python function that checks if a number is prime."}
]
text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
kw = dict(max_new_tokens=MAX_NEW_TOKENS, eos_token_id=tokenizer.eos_token_id, output_logits=True)

pt = diag.generate(model, inputs.input_ids, inputs.attention_mask, return_result=True, **kw)
path = diag.export_causal_lm(model)
ort, ort_session, _ = diag.onnx_generate(
    path, inputs.input_ids, inputs.attention_mask, return_result=True, return_session=True, **kw
)
print(f"torch: {len(pt.logits)} steps of", string_type(pt.logits[0], with_shape=True))
print(f"onnx:  {len(ort.logits)} steps of", string_type(ort.logits[0], with_shape=True))
print(pt.texts(tokenizer)[0])

# %%
# One ``[batch, vocabulary]`` tensor per step on each side. If the tokens differ,
# the generations saw different inputs after that step and only the steps until
# the first difference are compared.

same = pt.sequences.tolist() == ort.sequences.tolist()
print("same tokens:", same)
n_steps = min(len(pt.logits), len(ort.logits))
if not same:
    new_pt, new_ort = pt.new_tokens[0].tolist(), ort.new_tokens[0].tolist()
    differ = [i for i, (a, b) in enumerate(zip(new_pt, new_ort, strict=False)) if a != b]
    n_steps = differ[0] + 1 if differ else n_steps
    print("first different token at step", n_steps - 1)

# %%
# Per-step differences
# --------------------
#
# For each step: the largest absolute difference between the two logit vectors,
# the margin between the best and second best token (on the PyTorch side), and
# the ratio of the two. The argmax can only change if the two logits that make the
# margin move by half the margin each in opposite directions: no token can flip
# while the ratio stays below 0.5, and the ratio says how far from that each step
# was.

rows = []
for step in range(n_steps):
    a, b = pt.logits[step][0].float(), ort.logits[step][0].float()
    top2 = torch.topk(a, 2).values
    margin = float(top2[0] - top2[1])
    diff = float((a - b).abs().max())
    rows.append(
        dict(
            step=step,
            token=repr(tokenizer.decode([int(pt.new_tokens[0, step])])),
            max_abs_diff=diff,
            margin=margin,
            diff_over_margin=diff / margin if margin > 0 else float("inf"),
            same_argmax=int(a.argmax()) == int(b.argmax()),
        )
    )
df = pandas.DataFrame(rows).set_index("step")
print(df.head(12).to_string(float_format=lambda x: f"{x:.3g}"))
print("...")
print(
    df[["max_abs_diff", "margin", "diff_over_margin"]].describe().loc[["mean", "max"]].to_string()
)
ratio = df["diff_over_margin"]
print(f"difference / margin: median {ratio.median():.2g}, largest {ratio.max():.2g} "
      f"(step {ratio.idxmax()})")  # fmt: skip
# the rule above: below 0.5 the argmax cannot change
assert df.loc[ratio < 0.5, "same_argmax"].all(), "a token flipped below half the margin"

# %%
# :func:`diag.helpers.max_diff.max_diff` summarises the same comparison over all the steps at once
# (absolute and relative difference, and where the largest one is).

summary = max_diff(list(pt.logits[:n_steps]), list(ort.logits[:n_steps]))
print({k: summary[k] for k in ("abs", "avg", "n", "argm")})

# %%
# The same with teacher forcing
# -----------------------------
#
# :func:`diag.compare_teacher_forced` feeds both backends the *same* tokens at
# every step, whatever each would have chosen, so it keeps comparing after a
# divergence too. Forced along the tokens PyTorch generated, it sees the inputs of
# the generation above and must measure the same differences; it adds the
# agreement of the top-5 tokens and the KL divergence between the two
# distributions.

forced = diag.compare_teacher_forced(
    model,
    ort_session,
    inputs.input_ids,
    inputs.attention_mask,
    tokens=pt.new_tokens[0, :n_steps],
    tokenizer=tokenizer,
)
columns = ["step", "text", "max_abs_diff", "torch_margin", "top5_overlap", "kl_div"]
print(forced[columns].head(8).to_string(float_format=lambda x: f"{x:.3g}"))
gap = np.abs(forced["max_abs_diff"].to_numpy() - df["max_abs_diff"].to_numpy()).max()
print(f"largest gap between the two measures of max_abs_diff: {gap:.3g}")

# %%
# The plot: the differences against the margins (their ratio's median and largest
# value are printed above: how far below a flip the closest step stayed), and the
# closest calls are the steps where the model hesitates between two
# tokens (a small margin): these are the steps where an exported model may one day
# choose a different token, for example after a change of kernels or of dtype.
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
ax1.semilogy(df.index, df["margin"], marker="o", ms=3, label="margin top-1 / top-2 (torch)")
ax1.semilogy(df.index, df["max_abs_diff"], marker="o", ms=3, label="max |logits torch - onnx|")
ax1.set_ylabel("logit units, log scale")
ax1.legend()
ax1.grid(True, alpha=0.3)
ax1.set_title(f"{MODEL}: per-step logits difference between PyTorch and ONNX Runtime")
ax2.semilogy(df.index, df["diff_over_margin"], color="#c44e52", marker="o", ms=3)
ax2.axhline(0.5, color="black", linestyle=":", linewidth=1)
ax2.set_ylim(top=10)
ax2.set_ylabel("difference / margin")
ax2.set_xlabel("generation step (0 = prefill)")
ax2.grid(True, alpha=0.3)
ax2.text(0, 0.5, " a token can flip only above this line (0.5)", va="bottom", fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_parity.png"))
