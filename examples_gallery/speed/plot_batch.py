"""
.. _l-plot-batch:

Batches: left padding, attention masks, throughput
==================================================

Generating for several prompts at once shares every forward call between them:
the weights are read once per step for the whole batch. But prompts have
different lengths and a tensor is a rectangle, so the short ones are padded.
This page shows how the padding is placed and masked so that every row generates
exactly what it would generate alone, then measures the throughput of PyTorch and
ONNX Runtime as the batch grows.

Padding on the left
-------------------
"""

import os
import textwrap

import matplotlib.pyplot as plt
import pandas

import diag
from diag.generation.decoding import prompt_position_ids
from diag.helpers import string_type
from diag.helpers.timing import Spread, alternate

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
# short generations and three batch sizes: enough to show the trend, a few minutes of a
# reader's build on SmolLM2 even on a busy machine
MAX_NEW_TOKENS = 6 if FAST else 8
BATCH_SIZES = [1, 4, 16]
ROUNDS = 5
MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"

model, tokenizer = diag.load_pretrained(MODEL)
model.eval()
if tokenizer.pad_token_id is None:
    tokenizer.pad_token = tokenizer.eos_token
print("pad token:", repr(tokenizer.pad_token), tokenizer.pad_token_id)

# %%
# A decoder appends the new token after the last position of every row. With the
# padding on the right, the last position of a short row would be a pad token;
# with the padding on the **left**, every row ends with its own last real token
# and the new tokens of all rows line up in the same column.

tokenizer.padding_side = "left"
prompts = ["def print_prime(n):", "The capital of France is", "Hi"]
batch = tokenizer(prompts, return_tensors="pt", padding=True)
print(string_type(dict(batch), with_shape=True))


def show(tensor, fmt=str):
    """A batch tensor as a table, one row per prompt."""
    return pandas.DataFrame([[fmt(v) for v in row] for row in tensor.tolist()])


# ``PAD`` stands for the pad token, whose own text is longer.


def token_text(i):
    return "PAD" if i == tokenizer.pad_token_id else repr(tokenizer.decode([i]))


print(show(batch.input_ids, token_text).to_string())

# %%
# The **attention mask** says which positions hold real tokens (1) and which hold
# padding (0). The model never attends to a masked position, so the pad tokens
# have no influence on the real ones.

print(show(batch.attention_mask).to_string())

# %%
# The **position ids** number the real tokens of each row from 0, as if the row
# had no padding: a row must not see its tokens shifted because a longer prompt
# sat next to it in the batch. They follow from the mask: a cumulative sum minus
# one, the padded positions set to 0 (masked anyway). This is what
# :func:`diag.generate` and :func:`diag.onnx_generate` compute, like
# ``model.generate``; then each step appends a 1 to the mask and the next
# position to every row.

position_ids = prompt_position_ids(batch.attention_mask)
print(show(position_ids).to_string())

# %%
# Does padding change the answer?
# -------------------------------
#
# Each prompt generated alone (``alone``: the beginning of its new text), then the
# three in one padded batch: the tokens after the prompt must be the same, for
# PyTorch (``torch_same``) and for the exported ONNX model (``onnx_same``).
# Generated rows that stop early (eos) are filled with the pad token, as
# ``model.generate`` does.

path = diag.export_causal_lm(model)
_, session, _ = diag.onnx_generate(
    path, batch.input_ids, batch.attention_mask, max_new_tokens=1, return_session=True
)
kw = dict(max_new_tokens=MAX_NEW_TOKENS, eos_token_id=tokenizer.eos_token_id)

batched = diag.generate(model, batch.input_ids, batch.attention_mask, **kw)
batched_ort = diag.onnx_generate(session, batch.input_ids, batch.attention_mask, **kw)
width = batch.input_ids.shape[1]
rows = []
for i, prompt in enumerate(prompts):
    alone = tokenizer(prompt, return_tensors="pt")
    single = diag.generate(model, alone.input_ids, alone.attention_mask, **kw)
    new_alone = single[0, alone.input_ids.shape[1] :].tolist()
    new_batched = batched[i, width : width + len(new_alone)].tolist()
    new_ort = batched_ort[i, width : width + len(new_alone)].tolist()
    rows.append(
        dict(
            prompt=prompt,
            alone=tokenizer.decode(new_alone, skip_special_tokens=True).replace("\n", " ")[:28],
            torch_same=new_batched == new_alone,
            onnx_same=new_ort == new_alone,
        )
    )
parity = pandas.DataFrame(rows)
print(parity.to_string())
assert parity["torch_same"].all() and parity["onnx_same"].all(), parity

# %%
# Throughput against the batch size
# ---------------------------------
#
# Now ``n`` prompts at once, for each ``n`` of ``BATCH_SIZES``, with ``eos_token_id=None``
# so that every row generates exactly ``MAX_NEW_TOKENS`` tokens and all runs do the
# same work. Throughput is the number of new tokens of the whole batch per second.
# Every (backend, batch size) pair runs once untimed, then all of them run in turn,
# round after round (:func:`diag.helpers.timing.alternate`), so that a burst of load
# from another program falls on every batch size alike; each figure is the median
# of ``ROUNDS`` rounds, with the lowest and the highest round in brackets.

all_prompts = [
    "def print_prime(n):",
    "The capital of France is",
    "Once upon a time",
    "import numpy as np",
    "The three primary colors are",
    "Hi",
    "Write a haiku about the sea.",
    "SELECT name FROM users WHERE",
]
fixed = dict(max_new_tokens=MAX_NEW_TOKENS, eos_token_id=None)
backends = {
    "torch": lambda ids, mask: diag.generate(model, ids, mask, **fixed),
    "onnxruntime": lambda ids, mask: diag.onnx_generate(session, ids, mask, **fixed),
}
encoded = {
    n: tokenizer(
        [all_prompts[i % len(all_prompts)] for i in range(n)], return_tensors="pt", padding=True
    )
    for n in BATCH_SIZES
}
contenders = {
    (name, n): (lambda fn=fn, enc=encoded[n]: fn(enc.input_ids, enc.attention_mask))
    for n in BATCH_SIZES
    for name, fn in backends.items()
}
runs = alternate(contenders, rounds=ROUNDS)
for (_, n), rs in runs.items():
    shape = rs[0].result.shape
    assert shape == (n, encoded[n].input_ids.shape[1] + MAX_NEW_TOKENS), shape
speed = {
    key: Spread.of(r.seconds for r in rs).inverse(key[1] * MAX_NEW_TOKENS)
    for key, rs in runs.items()
}
table = pandas.DataFrame(
    {name: {n: f"{speed[name, n]:.1f}" for n in BATCH_SIZES} for name in backends}
).rename_axis("batch")
print(f"new tokens per second, whole batch: median (lowest-highest) of {ROUNDS} rounds")
print(table.to_string())

# %%
# The gain of a batch: its throughput over the throughput at batch 1, both medians
# of this run. A batch counts as a gain over the batch before it only when its median
# is above the highest round of that batch: medians within each other's spread are
# load, not a trend. A decode step of a small model on the CPU is dominated by
# reading the weights and by the per-call overhead, both shared by the batch; once
# the matrix products become compute-bound, a larger batch gains less.

for name in backends:
    gains = [speed[name, n].median / speed[name, 1].median for n in BATCH_SIZES]
    above = [
        speed[name, b].median > speed[name, a].high
        for a, b in zip(BATCH_SIZES, BATCH_SIZES[1:], strict=False)
    ]
    trend = (
        "each batch above every round of the one before"
        if all(above)
        else "no clear gain at batch "
        + ", ".join(str(b) for b, up in zip(BATCH_SIZES[1:], above, strict=True) if not up)
        + " in this run (its median within the rounds of the batch before)"
    )
    said = (
        f"{name}: batch {BATCH_SIZES[-1]} gives {gains[-1]:.1f}x the tokens per second of "
        f"batch 1 ("
        + ", ".join(f"{n}: {g:.1f}x" for n, g in zip(BATCH_SIZES, gains, strict=True))
        + f"); {trend}"
    )
    print(textwrap.fill(said, width=80, subsequent_indent="    "))

fig, ax = plt.subplots(figsize=(7, 4.5))
for name in backends:
    spreads = [speed[name, n] for n in BATCH_SIZES]
    line = ax.plot(BATCH_SIZES, [s.median for s in spreads], marker="o", label=name)[0]
    ax.fill_between(BATCH_SIZES, [s.low for s in spreads], [s.high for s in spreads],
                    color=line.get_color(), alpha=0.2)  # fmt: skip
ax.set_xscale("log", base=2)
ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
ax.set_xlabel("batch size")
ax.set_ylabel("new tokens per second (whole batch)")
ax.set_title(f"{MODEL}, greedy, {MAX_NEW_TOKENS} tokens per row, CPU")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_batch.png"))
