"""
.. _l-plot-long-prompts:

Long prompts: what the prefill and a decode step cost as the context grows
==========================================================================

A long prompt costs twice. The **prefill** runs the whole prompt through the model
at once: its matrix products grow with the number of tokens, its attention with
their square (every position attends to every earlier one). Then every **decode
step** attends to the whole cache: the keys and values of every earlier position,
in every layer. The weights stay the same, so a batch-1 step reads all the weights
and a cache that grows by a fixed size a position (every layer's keys and values:
layers x key-value heads x head size x 2 floats), both printed below.

The page measures both as the prompt grows, for the torch model (through
:func:`diag.generate`, the loop that equals ``model.generate``) and for
:func:`diag.onnx_generate` on diag's export, then asks ONNX Runtime's profiler
where the time of the longest prompt goes, operator by operator.
``bench/bench_context.py`` does the same for longer prompts, batch 8,
onnxruntime-genai's build and the peak memory.

Prompts of a given length
-------------------------
"""

import os
import textwrap

import matplotlib.pyplot as plt
import pandas
import torch

import diag
from diag.diagnose.kernel_time import profile_phases
from diag.generation import open_steps
from diag.helpers.timing import alternate, spread_of
from diag.ort import make_session, open_ort_backend
from diag.ort.chunked_prefill import PREFILL_CHUNK

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
LENGTHS = [16, 64, 128] if FAST else [64, 256, 512, 1024]
NEW_TOKENS = 4 if FAST else 8
ROUNDS = 5
MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"

model, tokenizer = diag.load_pretrained(MODEL)
model = model.eval().to(torch.float32)
config = model.config
onnx_model = diag.export_causal_lm(model)
backend = open_steps(onnx_model).backend

# A prompt of exactly n tokens: a text repeated, cut at n.
text = tokenizer("def print_prime(n):\n    # Print all primes between 1 and n\n")["input_ids"]
stream = torch.tensor(text * (max(LENGTHS) // len(text) + 1))


def prompt(n: int) -> torch.Tensor:
    return stream[:n][None, :]


kv_heads = config.num_key_value_heads
head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
per_position = 2 * config.num_hidden_layers * kv_heads * head_dim * 4
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(
    f"weights {weights / 2**20:.0f} MiB; the cache grows by {per_position / 1024:.1f} KiB "
    f"a position ({config.num_hidden_layers} layers x {kv_heads} key-value heads x "
    f"{head_dim} floats x 2)"
)

# %%
# Prefill and decode, prompt after prompt
# ---------------------------------------
#
# Greedy, eos ignored: every run makes ``NEW_TOKENS`` tokens. The decode cost is the
# time after the first token divided by the steps after it. Every (function, prompt)
# pair runs once to warm up, then all of them run in turn, round after round
# (:func:`diag.helpers.timing.alternate`), so that a burst of load from another
# program falls on every prompt length alike; each figure is the median of
# ``ROUNDS`` rounds, the plot shows the lowest and the highest round too.

KWARGS = dict(max_new_tokens=NEW_TOKENS, eos_token_id=[], do_sample=False, return_result=True)
FUNCTIONS = {
    "diag.generate": lambda ids: diag.generate(model, ids, **KWARGS),
    "onnx_generate": lambda ids: diag.onnx_generate(backend, ids, **KWARGS),
}
contenders = {
    (name, n): (lambda fn=fn, n=n: fn(prompt(n))) for n in LENGTHS for name, fn in FUNCTIONS.items()
}
runs = alternate(contenders, rounds=ROUNDS)
rows = []
for (name, n), rs in runs.items():
    other = next(v for (f, m), v in runs.items() if m == n and f != name)
    rows.append(
        {
            "function": name,
            "prompt": n,
            "prefill": spread_of(rs, lambda r: 1e3 * r.result.prefill_seconds),
            "decode": spread_of(rs, lambda r: 1e3 * r.result.decode_seconds / (NEW_TOKENS - 1)),
            "cache_MiB": (n + NEW_TOKENS) * per_position / 2**20,
            "same_tokens": torch.equal(rs[0].result.sequences, other[0].result.sequences),
        }
    )
df = pandas.DataFrame(rows)
df["prefill_ms"] = [s.median for s in df.prefill]
df["decode_ms/step"] = [s.median for s in df.decode]
shown = df.assign(prefill=[f"{s:.0f}" for s in df.prefill], decode=[f"{s:.1f}" for s in df.decode])
# short headers: the table fits the page's width
shown = shown.rename(
    columns={"prefill": "prefill ms", "decode": "decode ms/step", "cache_MiB": "cache MiB",
             "same_tokens": "same tokens"}
)  # fmt: skip
print(f"median (lowest-highest) of {ROUNDS} alternated rounds")
print(shown[["function", "prompt", "prefill ms", "decode ms/step", "cache MiB", "same tokens"]]
      .round(1).to_string(index=False))  # fmt: skip
assert df.same_tokens.all(), "torch and onnx_generate generated different tokens"

# %%
# The plot, lines at the medians, bands from the lowest to the highest round.
# What this run measured, computed from the medians, is printed under it:
# the prefill of the longest prompt against the shortest, and the decode step,
# which reads the whole cache, as the cache grows.

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for name, sub in df.groupby("function"):
    for ax, col, scale in ((axes[0], "prefill", 1e-3), (axes[1], "decode", 1.0)):
        spreads = [s.scaled(scale) for s in sub[col]]
        line = ax.plot(sub.prompt, [s.median for s in spreads], "-o", label=name)[0]
        ax.fill_between(sub.prompt, [s.low for s in spreads], [s.high for s in spreads],
                        color=line.get_color(), alpha=0.2)  # fmt: skip
axes[0].set(xlabel="prompt tokens", ylabel="seconds", title=f"prefill, {MODEL}")
axes[1].set(xlabel="cached positions", ylabel="ms per step", title=f"decode step, {MODEL}")
for ax in axes:
    ax.grid(alpha=0.3)
axes[1].legend()
fig.savefig(os.path.join(OUT, "plot_long_prompts.png"))

for name, sub in df.groupby("function", sort=False):
    sub = sub.set_index("prompt")
    first, last = LENGTHS[0], LENGTHS[-1]
    prefill = sub.loc[last, "prefill_ms"] / sub.loc[first, "prefill_ms"]
    decode = sub["decode_ms/step"]
    grows = all(decode.iloc[i] <= decode.iloc[i + 1] for i in range(len(decode) - 1))
    said = (
        f"{name}: prefill of {last} tokens {prefill:.1f}x that of {first} "
        f"({last // first}x the tokens); decode step at {last} positions "
        f"{decode[last] / decode[first]:.2f}x the step at {first}, "
        f"{'growing at every length' if grows else 'not growing at every length in this run'}"
    )
    print(textwrap.fill(said, width=80, subsequent_indent="    "))
print(
    f"the cache at {last} positions: {df['cache_MiB'].max():.0f} MiB against "
    f"{weights / 2**20:.0f} MiB of weights"
)

# %%
# Where the time goes
# -------------------
#
# ONNX Runtime's profiler (:func:`diag.diagnose.kernel_time.profile_phases`) times every
# kernel; the table adds them up per operator type, for the prefill of the shortest
# and of the longest prompt and for one decode step after each. ``MatMul`` and
# ``Gemm`` read the weights (``Gemm`` is the lm_head: the logits of every prompt
# position in the prefill), ``Attention`` reads the cache, and, in this dynamic
# layout, writes the longer cache of the next step (its ``present`` outputs: the
# past plus the new position, copied every step).

profiles = {
    n: profile_phases(onnx_model, prompt(n), new_tokens=NEW_TOKENS)
    for n in (LENGTHS[0], LENGTHS[-1])
}
table = pandas.concat(
    {
        f"{phase} {n}": profiles[n][f"{phase}_ms"]
        for phase in ("prefill", "decode")
        for n in profiles
    },
    axis=1,
).fillna(0.0)
table = table.sort_values(f"prefill {LENGTHS[-1]}", ascending=False)
print("kernel ms per operator type; prefill / decode step after a prompt of n tokens")
print(table.head(8).round(2).to_string())

# %%
# The share of the attention in the step, short and long prompt: what grows with the
# context. At the longest prompt the attention of the prefill is quadratic in the
# prompt, and that of a decode step reads and copies the cache.

share = pandas.DataFrame(
    {
        phase: [
            100 * profiles[n].loc["Attention", f"{phase}_ms"] / profiles[n][f"{phase}_ms"].sum()
            for n in profiles
        ]
        for phase in ("prefill", "decode")
    },
    index=[f"{n} tokens" for n in profiles],
)
print("Attention, % of the kernel time:")
print(share.round(1).to_string())

# %%
# The prefill in chunks
# ---------------------
#
# ONNX Runtime's CPU ``Attention`` computes the score of every query against every
# key, then masks out the later keys: in a one-shot prefill half of that work is
# thrown away. :func:`diag.onnx_generate` therefore prefills a long prompt in steps
# of ``PREFILL_CHUNK`` tokens (:mod:`diag.ort.chunked_prefill`): each step attends to
# the cache of the steps before it and to itself, and the masked part shrinks to the
# chunk's own triangle. The last position's logits and the cache are bit for bit
# those of the one-shot prefill. Both, on the longest prompt (the tiny model of the
# fast mode takes chunks of 32 tokens):

chunk = 32 if FAST else PREFILL_CHUNK
session = make_session(onnx_model)
ids = prompt(LENGTHS[-1])
ways = {"one step": None, f"chunks of {chunk}": chunk}
steps = {label: open_ort_backend(session, prefill_chunk=size) for label, size in ways.items()}
runs = alternate(
    {label: (lambda s=s: diag.onnx_generate(s, ids, **dict(KWARGS, output_logits=True)))
     for label, s in steps.items()},
    rounds=ROUNDS,
)  # fmt: skip
timings = {
    label: f"{spread_of(rs, lambda r: 1e3 * r.result.prefill_seconds):.0f}"
    for label, rs in runs.items()
}
print(f"prefill of {LENGTHS[-1]} tokens, ms, median (lowest-highest) of {ROUNDS} rounds:")
print(pandas.Series(timings).to_string())
last = [rs[0].result.logits[0] for rs in runs.values()]
print("same first-token logits, bit for bit:", torch.equal(*last))
