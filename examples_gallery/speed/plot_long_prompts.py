"""
.. _l-plot-long-prompts:

Long prompts: what the prefill and a decode step cost as the context grows
==========================================================================

A long prompt costs twice. The **prefill** runs the whole prompt through the model
at once: its matrix products grow with the number of tokens, its attention with
their square (every position attends to every earlier one). Then every **decode
step** attends to the whole cache: the keys and values of every earlier position,
in every layer. The weights stay the same, so a batch-1 step that reads 513 MB of
weights on SmolLM2 also reads a cache that grows by 92 KB a position (30 layers, 3
key-value heads of 64 floats, keys and values).

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

import matplotlib.pyplot as plt
import pandas
import torch

import diag
from diag.generation import open_steps
from diag.ort import make_session, open_ort_backend
from diag.ort.chunked_prefill import PREFILL_CHUNK
from diag.ort.profiling import profile_phases

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
LENGTHS = [16, 64, 128] if FAST else [64, 256, 512, 1024]
NEW_TOKENS = 4 if FAST else 8

model, tokenizer = diag.load_pretrained("tiny:llama" if FAST else "smollm2-135m-instruct")
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
print(f"weights {weights / 2**20:.0f} MiB; the cache grows by {per_position / 1024:.1f} KiB a position")

# %%
# Prefill and decode, prompt after prompt
# ---------------------------------------
#
# Greedy, eos ignored: every run makes ``NEW_TOKENS`` tokens. The decode cost is the
# time after the first token divided by the steps after it. Each function runs once
# on each prompt to warm up, then once to be timed; the two alternate, so they see
# the same load.

KWARGS = dict(max_new_tokens=NEW_TOKENS, eos_token_id=[], do_sample=False, return_result=True)
rows = []
for n in LENGTHS:
    ids = prompt(n)
    functions = {
        "torch (diag.generate)": lambda ids=ids: diag.generate(model, ids, **KWARGS),
        "onnx_generate": lambda ids=ids: diag.onnx_generate(backend, ids, **KWARGS),
    }
    results = {}
    for name, fn in functions.items():
        fn()  # warm-up
        results[name] = fn()
    same = torch.equal(*(r.sequences for r in results.values()))
    for name, res in results.items():
        rows.append(
            {
                "function": name,
                "prompt": n,
                "prefill_ms": 1e3 * res.prefill_seconds,
                "decode_ms/step": 1e3 * res.decode_seconds / (NEW_TOKENS - 1),
                "cache_MiB": (n + NEW_TOKENS) * per_position / 2**20,
                "same_tokens": same,
            }
        )
df = pandas.DataFrame(rows)
print(df.round(2).to_string(index=False))

# %%
# The plot: the prefill grows faster than the prompt (the attention is quadratic),
# the decode step grows with the cache it reads.

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for name, sub in df.groupby("function"):
    axes[0].plot(sub.prompt, sub.prefill_ms / 1e3, "-o", label=name)
    axes[1].plot(sub.prompt, sub["decode_ms/step"], "-o", label=name)
axes[0].set(xlabel="prompt tokens", ylabel="seconds", title="prefill")
axes[1].set(xlabel="cached positions", ylabel="ms per step", title="decode step")
for ax in axes:
    ax.grid(alpha=0.3)
axes[1].legend()
fig.savefig(os.path.join(OUT, "plot_long_prompts.png"))

ox = df[df.function == "onnx_generate"].set_index("prompt")
ratio = ox["decode_ms/step"].iloc[0] / ox["decode_ms/step"].iloc[-1]
print(
    f"onnx_generate decode speed at {LENGTHS[-1]} positions = {ratio:.2f}x its speed at "
    f"{LENGTHS[0]}; the cache is then {ox['cache_MiB'].iloc[-1]:.0f} MiB against "
    f"{weights / 2**20:.0f} MiB of weights"
)

# %%
# Where the time goes
# -------------------
#
# ONNX Runtime's profiler (:func:`diag.ort.profiling.profile_phases`) times every
# kernel; the table adds them up per operator type, for the prefill of the shortest
# and of the longest prompt and for one decode step after each. ``MatMul`` and
# ``Gemm`` read the weights (``Gemm`` is the lm_head: the logits of every prompt
# position in the prefill), ``Attention`` reads the cache, and, in this dynamic
# layout, writes the longer cache of the next step (its ``present`` outputs: the
# past plus the new position, copied every step).

profiles = {n: profile_phases(onnx_model, prompt(n), new_tokens=NEW_TOKENS) for n in (LENGTHS[0], LENGTHS[-1])}
table = pandas.concat(
    {
        f"{col} {n}": profiles[n][col]
        for col in ("prefill_ms", "decode_ms")
        for n in profiles
    },
    axis=1,
).fillna(0.0)
table = table.sort_values(f"prefill_ms {LENGTHS[-1]}", ascending=False)
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
timings, last = {}, {}
for label, size in (("one step", None), (f"chunks of {chunk}", chunk)):
    step = open_ort_backend(session, prefill_chunk=size)
    res = diag.onnx_generate(step, ids, **KWARGS)  # warm-up
    res = diag.onnx_generate(step, ids, **dict(KWARGS, output_logits=True))
    timings[label] = 1e3 * res.prefill_seconds
    last[label] = res.logits[0]
print(pandas.Series(timings, name="prefill ms").round(1).to_string())
print("same first-token logits, bit for bit:", torch.equal(*last.values()))
