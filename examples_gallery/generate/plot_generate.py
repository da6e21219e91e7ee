"""
.. _l-plot-generate:

From a prompt to an answer: generate with PyTorch and ONNX Runtime
==================================================================

A causal language model predicts one token at a time. ``model.generate`` hides the
loop that turns a prompt into an answer; this page writes that loop by hand,
then runs the same prompt through four implementations and checks that they agree
token for token:

1. transformers' ``model.generate``;
2. a dozen lines of hand-written greedy decoding with an explicit key/value cache;
3. :func:`diag.generate`, the same loop with every option of ``model.generate``
   that matters for a causal LM (sampling, eos, batches, scores, timings);
4. :func:`diag.onnx_generate`, the same decoding code driving the model exported
   to ONNX (:func:`diag.export_causal_lm`) in ONNX Runtime.

The model is SmolLM2-135M-Instruct, float32, on the CPU, loaded offline by
:func:`diag.load_pretrained` (no model hub). With ``DIAG_FAST=1`` in the environment
the page runs on a tiny untrained model with the same tokenizer: the code path is
identical, the texts are random tokens.

Load the model and tokenize the prompt
--------------------------------------
"""

import os
import time

import matplotlib.pyplot as plt
import pandas
import torch

import diag
from diag.compat.transformers_api import cache_argument, output_cache
from diag.helpers import get_weight_type, string_type

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")  # where the figures are saved
MAX_NEW_TOKENS = 16 if FAST else 100

model, tokenizer = diag.load_pretrained("tiny:llama" if FAST else "smollm2-135m-instruct")
model.eval()
print(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} weights")
print("weight type:", get_weight_type(model))
print("layers:", model.config.num_hidden_layers, "- vocabulary:", model.config.vocab_size)

# %%
# The prompt is the beginning of a Python function, its docstring says what to write.
# ``return_tensors="pt"`` gives torch tensors: ``input_ids`` (the token ids) and
# ``attention_mask`` (1 for every real token; 0 would mark padding, see
# :ref:`l-plot-batch`).

prompt = '''def print_prime(n):
    """
    Print all primes between 1 and n
    """'''
inputs = tokenizer(prompt, return_tensors="pt")
print("inputs:", string_type(dict(inputs), with_shape=True))

# %%
# :func:`diag.helpers.string_type.string_type` prints nested structures compactly:
# ``T7s1x21`` is a tensor of element type 7 (int64, the ONNX numbering) and shape
# ``1x21`` (see :doc:`/string_type`). The prompt cut into tokens:

print([tokenizer.decode(t) for t in inputs.input_ids[0]])

# %%
# The end-of-sequence token stops the generation when the model produces it.

eos_token_id = tokenizer.eos_token_id
print(f"eos_token_id={eos_token_id} ({tokenizer.decode([eos_token_id])!r})")

# %%
# ``model.generate``
# ------------------
#
# Greedy decoding (``do_sample=False``): at every step, the most probable token.
# Every implementation below runs once untimed first so that the measured call
# does not pay one-time costs (memory allocation, kernel selection, the ONNX
# session creation).

data = []  # one row per implementation, turned into a table at the end


def timed(fn, *args, **kwargs):
    """Returns ``fn(*args, **kwargs)`` and the seconds it took."""
    begin = time.perf_counter()
    res = fn(*args, **kwargs)
    return res, time.perf_counter() - begin


generate_kwargs = dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos_token_id)
model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm-up
expected, duration = timed(model.generate, **inputs, **generate_kwargs)
n_prompt = inputs.input_ids.shape[1]
data.append(dict(name="model.generate", seconds=duration, new_tokens=expected.shape[1] - n_prompt))
print("output:", string_type(expected, with_shape=True, with_min_max=True))
print(tokenizer.decode(expected[0], skip_special_tokens=True))

# %%
# Generate by hand
# ----------------
#
# Two kinds of forward calls make a generation:
#
# * the **prefill** runs the whole prompt at once and returns the logits of every
#   position plus the key/value cache: the keys and values of every layer for
#   every token seen so far;
# * each **decode** step feeds only the last chosen token with that cache and gets
#   the next logits and the grown cache back. Without the cache, every step would
#   recompute the attention of the whole sequence.
#
# The next token is the ``argmax`` of the last position's logits (greedy). The loop
# stops after the eos token or after ``max_new_tokens`` tokens, like
# ``model.generate`` (which keeps the eos token in its output).
#
# The forward takes the cache as ``cache`` from transformers 5.24 on and as
# ``past_key_values`` before (the old name still works there, with a warning), and the
# output holds it under the same name: :mod:`diag.compat.transformers_api` knows which.

cache_name = cache_argument(model)


@torch.no_grad()
def greedy_generate(model, input_ids, eos_token_id, max_new_tokens):
    out = model(input_ids=input_ids, use_cache=True)  # prefill: the whole prompt
    tokens = input_ids
    for step in range(max_new_tokens):
        next_id = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # greedy choice
        tokens = torch.cat([tokens, next_id], dim=-1)
        if next_id.item() == eos_token_id or step == max_new_tokens - 1:
            break
        # decode: one new token in, the cache carries everything before it
        out = model(input_ids=next_id, **{cache_name: output_cache(out)}, use_cache=True)
    return tokens


# %%
# What the prefill returns: logits ``[batch, prompt length, vocabulary]`` and a
# ``DynamicCache`` holding one key and one value tensor
# ``[batch, key/value heads, past length, head size]`` per layer.

with torch.no_grad():
    prefill = model(input_ids=inputs.input_ids, use_cache=True)
print("logits:", string_type(prefill.logits, with_shape=True))
print("cache: ", string_type(output_cache(prefill), with_shape=True)[:200], "...")

# %%
# Now the loop, timed.

greedy_generate(model, inputs.input_ids, eos_token_id, 2)  # warm-up
by_hand, duration = timed(greedy_generate, model, inputs.input_ids, eos_token_id, MAX_NEW_TOKENS)
data.append(dict(name="by hand", seconds=duration, new_tokens=by_hand.shape[1] - n_prompt))
print(tokenizer.decode(by_hand[0], skip_special_tokens=True))

# %%
# :func:`diag.generate`
# ---------------------
#
# The same loop, written once for every backend: it asks a backend for the logits
# of one step and owns everything else (logits processors, token choice, attention
# mask, position ids, eos bookkeeping). ``return_result=True`` returns a
# :class:`diag.GenerateResult` with the tokens, why each row stopped, and the time
# spent in the prefill and in the decode steps.

diag.generate(model, inputs.input_ids, inputs.attention_mask, max_new_tokens=2)  # warm-up
res, duration = timed(
    diag.generate,
    model,
    inputs.input_ids,
    inputs.attention_mask,
    return_result=True,
    **generate_kwargs,
)
data.append(
    dict(
        name="diag.generate",
        seconds=duration,
        new_tokens=res.num_generated_tokens[0],
        prefill_s=res.prefill_seconds,
        decode_s=res.decode_seconds,
    )
)
print("finish reason:", res.finish_reasons[0], "- forward calls:", res.num_steps)
print(f"prefill {res.prefill_seconds:.3f}s, decode {res.decode_seconds:.3f}s")
print(tokenizer.decode(res.sequences[0], skip_special_tokens=True))

# %%
# Export to ONNX
# --------------
#
# :func:`diag.export_causal_lm` exports the model with its cache as explicit
# inputs and outputs (:doc:`the export contract </contract>`), checks the ONNX
# model against PyTorch on a few inputs, and caches the result: the second call
# with the same model returns the file at once.
# :ref:`l-plot-export-patches` shows what it takes.

export, export_seconds = timed(diag.export_causal_lm, model)
path = export.filename
print(f"{'reused the cached export' if export.cached else 'exported'} in {export_seconds:.1f}s")
print(f"{len(export.input_names)} inputs: {export.input_names[:5]} ...")
print(f"{len(export.output_names)} outputs: {export.output_names[:3]} ...")

# %%
# The validation: the largest absolute difference between ONNX Runtime and PyTorch
# on several input sets (the prefill with an empty cache, batch 1, left padding...),
# for the logits and the cache outputs.

if export.validation is not None:
    print(export.validation.table())

# %%
# :func:`diag.onnx_generate`
# --------------------------
#
# The first call creates the ONNX Runtime session; ``return_session=True`` hands it
# back with the feeds of the last step, so the timed call reuses it. The cache
# stays in ONNX Runtime memory between steps (IO binding): only the new token
# and the logits cross the boundary.

_, session, _feeds = diag.onnx_generate(
    path,
    inputs.input_ids,
    inputs.attention_mask,
    eos_token_id=eos_token_id,
    max_new_tokens=2,
    return_session=True,
)
ort_res, duration = timed(
    diag.onnx_generate,
    session,
    inputs.input_ids,
    inputs.attention_mask,
    eos_token_id=eos_token_id,
    max_new_tokens=MAX_NEW_TOKENS,
    return_result=True,
)
data.append(
    dict(
        name="onnx_generate",
        seconds=duration,
        new_tokens=ort_res.num_generated_tokens[0],
        prefill_s=ort_res.prefill_seconds,
        decode_s=ort_res.decode_seconds,
    )
)
print("output:", string_type(ort_res.sequences, with_shape=True, with_min_max=True))
print(tokenizer.decode(ort_res.sequences[0], skip_special_tokens=True))

# %%
# Same tokens?
# ------------
#
# Greedy decoding is deterministic: all four must produce the same tokens as
# ``model.generate``. The ONNX model computes the same function with different
# kernels, so its logits differ slightly (:ref:`l-plot-parity` measures by how
# much); a different token would mean the difference exceeded the gap between the
# two most probable tokens at some step.

outputs = {
    "model.generate": expected,
    "by hand": by_hand,
    "diag.generate": res.sequences,
    "onnx_generate": ort_res.sequences,
}
for row in data:
    got = outputs[row["name"]]
    row["same_tokens"] = got.tolist() == expected.tolist()
    print(f"{row['name']:>15}: {'same tokens' if row['same_tokens'] else 'DIFFERENT tokens'}")
assert all(row["same_tokens"] for row in data), "an implementation diverged from model.generate"

# %%
# How fast?
# ---------
#
# Tokens per second count the new tokens only. ``prefill_s`` and ``decode_s``
# split the time of the implementations that measure it (:class:`diag.GenerateResult`):
# the prefill is one large call over the whole prompt, the decode steps are many
# small calls where the per-call overhead shows. ONNX Runtime usually wins the
# decode steps: a step is one call into optimised, fused kernels, where PyTorch
# runs the Python code of every module and of the cache.

df = pandas.DataFrame(data).set_index("name")
df["tokens/s"] = df["new_tokens"] / df["seconds"]
df = df[["seconds", "new_tokens", "tokens/s", "prefill_s", "decode_s", "same_tokens"]]
print(df.round(3).to_string())

# %%
# The same numbers in a plot. On the left, the bars of the two implementations
# that split their time show the prefill (hatched) below the decode steps.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
x = range(len(df))
prefill = df["prefill_s"].fillna(0).to_numpy()
bars = ax1.bar(x, df["seconds"], color=colors)
ax1.bar(x, prefill, color="none", edgecolor="black", linewidth=0, hatch="//", label="prefill")
ax1.bar_label(bars, fmt="%.2f s", fontsize=8)
ax1.set_ylabel("seconds")
ax1.set_title(f"Time to generate {MAX_NEW_TOKENS} tokens (lower is better)")
ax1.legend(loc="upper right")
bars = ax2.bar(x, df["tokens/s"], color=colors)
ax2.bar_label(bars, fmt="%.1f", fontsize=8)
ax2.set_ylabel("new tokens per second")
ax2.set_title("Throughput (higher is better)")
for ax in (ax1, ax2):
    ax.set_xticks(list(x), df.index, rotation=20)
fig.suptitle(f"{type(model).__name__}, greedy, batch 1, CPU")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_generate.png"))
