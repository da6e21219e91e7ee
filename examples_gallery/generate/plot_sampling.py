"""
.. _l-plot-sampling:

Temperature, top-k, top-p: what sampling does to the next token
================================================================

Greedy decoding always takes the most probable token. Sampling draws the next
token at random from the model's distribution, after reshaping it:

* **temperature** divides the logits before the softmax: below 1 it sharpens
  the distribution (towards greedy), above 1 it flattens it;
* **top-k** keeps the ``k`` most probable tokens and drops the others;
* **top-p** (nucleus) keeps the smallest set of most probable tokens whose
  probabilities add up to at least ``p``.

:func:`diag.generate` applies them with transformers' own logits processors, in
the order ``model.generate`` does, then draws one token with ``torch.multinomial``.
This page shows their effect on a real next-token distribution, then checks that
a seeded sampling gives the same text with PyTorch and with ONNX Runtime.

The next-token distribution
---------------------------
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas
import torch

import diag
from diag.generation.options import DecodingOptions
from diag.generation.sampling import build_logits_processor
from diag.helpers import string_type

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
MAX_NEW_TOKENS = 8 if FAST else 40
SEEDS = [0, 1] if FAST else [0, 1, 2]
TOP = 15  # tokens shown in the plots

MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
model, tokenizer = diag.load_pretrained(MODEL)
model.eval()

prompt = "Once upon a time, in a small village by the sea, there lived a"
inputs = tokenizer(prompt, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[:, -1, :]  # [1, vocab]: the next token's logits
print("next-token logits:", string_type(logits, with_shape=True, with_min_max=True))

# %%
# A small helper: the probabilities after the processors ``diag.generate`` would
# build for the given options. ``top_k=0`` and ``top_p=1.0`` switch those two off
# (transformers' defaults are ``top_k=50``, ``top_p=1.0``).


def probabilities(temperature=1.0, top_k=0, top_p=1.0):
    options = DecodingOptions(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    processor = build_logits_processor(options, prompt_length=inputs.input_ids.shape[1])
    scores = processor(inputs.input_ids, logits.clone())  # dropped tokens get -inf
    return torch.softmax(scores, dim=-1)[0]


base = probabilities()
order = torch.argsort(base, descending=True)[:TOP]
labels = [repr(tokenizer.decode([int(i)])) for i in order]

table = pandas.DataFrame(
    {
        "token": labels,
        "p": base[order].numpy(),
        "T=0.5": probabilities(temperature=0.5)[order].numpy(),
        "T=1.5": probabilities(temperature=1.5)[order].numpy(),
        "top_k=5": probabilities(top_k=5)[order].numpy(),
        "top_p=0.5": probabilities(top_p=0.5)[order].numpy(),
    }
)
print(table.to_string(float_format=lambda p: f"{p:.4f}"))

# %%
# Each column is a distribution over the whole vocabulary; the table shows its
# ``TOP`` most probable tokens. Top-k and top-p set the dropped tokens to zero and
# renormalise the others, so the kept tokens gain probability.
#
# The figure below shows the same, plus how many tokens remain plausible as the
# temperature varies: the *perplexity* of the distribution, ``exp(entropy)``, is
# the number of equally likely tokens that would have the same entropy.

x = np.arange(TOP)
fig, axes = plt.subplots(2, 2, figsize=(12, 8))

ax = axes[0, 0]
for i, t in enumerate([0.5, 1.0, 1.5]):
    ax.bar(x + (i - 1) * 0.27, probabilities(temperature=t)[order].numpy(), 0.27, label=f"T={t}")
ax.set_title("temperature reshapes the distribution")
ax.legend()

ax = axes[0, 1]
ax.bar(x, base[order].numpy(), color="lightgray", label="before")
ax.bar(x, probabilities(top_k=5)[order].numpy(), width=0.5, color="#c44e52", label="top_k=5")
ax.set_title("top-k keeps the k most probable tokens")
ax.legend()

ax = axes[1, 0]
after = probabilities(top_p=0.5)
kept = int((after > 0).sum())
ax.bar(x, base[order].numpy(), color="lightgray", label="before")
ax.bar(x, after[order].numpy(), width=0.5, color="#55a868", label=f"top_p=0.5 ({kept} kept)")
ax.step(x, torch.cumsum(base[order], 0).numpy(), where="mid", color="black", label="cumulative p")
ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
ax.set_title("top-p keeps the smallest set reaching p")
ax.legend()
for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
    ax.set_xticks(x, labels, rotation=60, fontsize=8)
    ax.set_ylabel("probability")

ax = axes[1, 1]
temperatures = np.linspace(0.1, 2.0, 20)
perplexity = []
for t in temperatures:
    p = probabilities(temperature=float(t))
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    perplexity.append(float(torch.exp(entropy)))
ax.plot(temperatures, perplexity, marker="o")
ax.set_yscale("log")
ax.set_xlabel("temperature")
ax.set_ylabel("exp(entropy), log scale")
ax.set_title("how many tokens remain plausible")
# the prompt's last words, cut at a space so that no word is cut
fig.suptitle(f"{MODEL}: the next token after '...{prompt[-40:].split(' ', 1)[1]}'")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_sampling.png"))

# %%
# Seeded sampling, PyTorch and ONNX Runtime
# -----------------------------------------
#
# A sampled generation depends on the random draws. Pass a seeded
# :class:`torch.Generator` and the draws are fixed: the same seed gives the same
# text. Both :func:`diag.generate` and :func:`diag.onnx_generate` run the same
# decoding code, and it draws on the CPU from the float32 logits, so with the
# same seed they draw the same numbers; they produce the same tokens as long as
# their logits agree closely (they do, see :ref:`l-plot-parity`).
#
# Without ``generator``, the global torch seed is used, as ``model.generate``
# does: ``torch.manual_seed(s)`` then ``model.generate(..., do_sample=True)``
# gives the same tokens as ``torch.manual_seed(s)`` then :func:`diag.generate`.

eos = tokenizer.eos_token_id
sampling = dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9, eos_token_id=eos)
sampling["max_new_tokens"] = MAX_NEW_TOKENS
path = diag.export_causal_lm(model)
_, session, _ = diag.onnx_generate(
    path, inputs.input_ids, inputs.attention_mask, max_new_tokens=1, return_session=True
)

rows = []
for seed in SEEDS:
    torch.manual_seed(seed)
    hf = model.generate(**inputs, **sampling)
    torch.manual_seed(seed)
    pt = diag.generate(model, inputs.input_ids, inputs.attention_mask, **sampling)
    # a new generator seeded with s draws the same numbers as the global one after
    # torch.manual_seed(s)
    ort = diag.onnx_generate(
        session,
        inputs.input_ids,
        inputs.attention_mask,
        generator=torch.Generator().manual_seed(seed),
        **sampling,
    )
    new = tokenizer.decode(pt[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    rows.append(
        dict(
            seed=seed,
            text=new.replace("\n", " ")[:70],
            same_as_model_generate=pt.tolist() == hf.tolist(),
            torch_equals_onnx=pt.tolist() == ort.tolist(),
        )
    )
df = pandas.DataFrame(rows).set_index("seed")
print(df.to_string())

# %%
# One continuation per seed; for each seed, the same tokens everywhere.

assert df["same_as_model_generate"].all(), "diag.generate differs from model.generate"
assert df["torch_equals_onnx"].all(), "torch and ONNX Runtime sampled different tokens"
