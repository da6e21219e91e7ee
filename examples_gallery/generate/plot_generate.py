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
import textwrap
import time

import matplotlib.pyplot as plt
import pandas
import torch

import diag
from diag.compat.transformers_api import cache_argument, output_cache
from diag.helpers import get_weight_type, string_type
from diag.helpers.timing import Spread, alternate, spread_of

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")  # where the figures are saved
MAX_NEW_TOKENS = 16 if FAST else 100
MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
ROUNDS = 3  # each speed below is the median of ROUNDS rounds

model, tokenizer = diag.load_pretrained(MODEL)
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
# ``T7s1xN`` is a tensor of element type 7 (int64, the ONNX numbering) and shape
# ``1xN``, one row of the prompt's ``N`` tokens (see :doc:`/string_type`). The prompt
# cut into tokens:

print(textwrap.fill(repr([tokenizer.decode(t) for t in inputs.input_ids[0]]), width=80))

# %%
# The end-of-sequence token stops the generation when the model produces it.

eos_token_id = tokenizer.eos_token_id
print(f"eos_token_id={eos_token_id} ({tokenizer.decode([eos_token_id])!r})")

# %%
# ``model.generate``
# ------------------
#
# Greedy decoding (``do_sample=False``): at every step, the most probable token.
# Each implementation runs once here to show what it returns; the section
# "How fast?" times them afterwards, in turn.

generate_kwargs = dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos_token_id)
expected = model.generate(**inputs, **generate_kwargs)
n_prompt = inputs.input_ids.shape[1]
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
print("cache: ", string_type(output_cache(prefill), with_shape=True)[:70], "...")

# %%
# Now the loop.

by_hand = greedy_generate(model, inputs.input_ids, eos_token_id, MAX_NEW_TOKENS)
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

res = diag.generate(
    model, inputs.input_ids, inputs.attention_mask, return_result=True, **generate_kwargs
)
print("finish reason:", res.finish_reasons[0], "- forward calls:", res.num_steps)
print(f"prefill {res.prefill_seconds:.3f} s, decode {res.decode_seconds:.3f} s")
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

begin = time.perf_counter()
export = diag.export_causal_lm(model)
export_seconds = time.perf_counter() - begin
path = export.filename
print(f"{'reused the cached export' if export.cached else 'exported'} in {export_seconds:.1f} s")
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
# The call creates the ONNX Runtime session; ``return_session=True`` hands it
# back with the feeds of the last step, so the timed calls below reuse it. The
# cache stays in ONNX Runtime memory between steps (IO binding): only the new
# token and the logits cross the boundary.

ort_res, session, _feeds = diag.onnx_generate(
    path,
    inputs.input_ids,
    inputs.attention_mask,
    return_result=True,
    return_session=True,
    **generate_kwargs,
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
same_tokens = {name: got.tolist() == expected.tolist() for name, got in outputs.items()}
for name, same in same_tokens.items():
    print(f"{name:>15}: {'same tokens' if same else 'DIFFERENT tokens'}")
assert all(same_tokens.values()), "an implementation diverged from model.generate"

# %%
# How fast?
# ---------
#
# The four run in turn, round after round (:func:`diag.helpers.timing.alternate`),
# so that a burst of load from another program slows all of them alike; each
# figure is the median of the rounds, with the lowest and the highest round in
# brackets. Each already ran once above: the timed calls pay no one-time cost
# (memory allocation, kernel selection, the ONNX session creation).
#
# Tokens per second count the new tokens only. ``prefill ms`` and
# ``decode ms/step`` split the time of the two implementations that measure it
# (:class:`diag.GenerateResult`): the prefill is one large call over the whole
# prompt, the decode steps are many small calls where the per-call overhead
# shows. In a decode step ONNX Runtime runs one call into fused kernels, where
# PyTorch runs the Python code of every module and of the cache.

contenders = {
    "model.generate": lambda: model.generate(**inputs, **generate_kwargs),
    "by hand": lambda: greedy_generate(model, inputs.input_ids, eos_token_id, MAX_NEW_TOKENS),
    "diag.generate": lambda: diag.generate(
        model, inputs.input_ids, inputs.attention_mask, return_result=True, **generate_kwargs
    ),
    "onnx_generate": lambda: diag.onnx_generate(
        session, inputs.input_ids, inputs.attention_mask, return_result=True, **generate_kwargs
    ),
}
runs = alternate(contenders, rounds=ROUNDS, warmup=0)
new_tokens = expected.shape[1] - n_prompt
speed = {name: spread_of(rs).inverse(new_tokens) for name, rs in runs.items()}


def median_ms(rs, phase):
    """Median over the rounds of the milliseconds a run spent in ``phase``."""
    return spread_of(rs, lambda r: 1e3 * getattr(r.result, f"{phase}_seconds")).median


rows = {}
for name, rs in runs.items():
    split = hasattr(rs[0].result, "prefill_seconds")  # diag's two return a GenerateResult
    rows[name] = {
        "tokens/s (lowest-highest)": f"{speed[name]:.1f}",
        "prefill ms": f"{median_ms(rs, 'prefill'):.0f}" if split else "-",
        "decode ms/step": f"{median_ms(rs, 'decode') / (new_tokens - 1):.1f}" if split else "-",
    }
print(f"{new_tokens} new tokens, median of {ROUNDS} alternated rounds:")
print(pandas.DataFrame(rows).T.to_string())

# %%
# The ratio this page is about, round by round (the same round's calls saw the
# same load):

ratios = Spread.of(
    a.seconds / b.seconds
    for a, b in zip(runs["model.generate"], runs["onnx_generate"], strict=True)
)
print(
    f"onnx_generate produced the tokens {ratios.median:.1f}x as fast as model.generate "
    f"(rounds: {ratios.low:.1f}x to {ratios.high:.1f}x)"
)

# %%
# The same numbers in a plot, the bars at the median, the lines from the
# lowest to the highest round.

fig, ax = plt.subplots(figsize=(8, 4))
names = list(speed)
medians = [speed[n].median for n in names]
errors = [
    [speed[n].median - speed[n].low for n in names],
    [speed[n].high - speed[n].median for n in names],
]
bars = ax.bar(
    names, medians, yerr=errors, capsize=4, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
)
ax.bar_label(bars, fmt="%.1f", fontsize=8, label_type="center", color="white")
ax.set_ylabel("new tokens per second")
ax.set_title(f"{MODEL}, greedy, batch 1, {new_tokens} tokens, CPU (higher is better)")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_generate.png"))
