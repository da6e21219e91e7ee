"""
.. _l-plot-diagnose:

Where do torch and ONNX disagree? Step, token, layer
====================================================

An exported model that generates other tokens than the PyTorch model is either
fine (the two runtimes round differently and the model hesitated between two
tokens) or broken (the export computes something else). :mod:`diag.diagnose`
tells which, and where:

* :func:`diag.compare_teacher_forced` feeds both models the same tokens step by
  step and measures, per step, the logits difference, the argmax agreement, the
  top-5 overlap and the KL divergence;
* :func:`diag.first_divergence` lets both generate freely and reports the first
  step where the tokens differ, with both sides' best candidates and margins;
* :func:`diag.localize_layer` compares the hidden states after every decoder
  layer and names the first layer that goes wrong.

The page runs them on a good export, then on an export broken on purpose: one
weight matrix of one decoder layer is changed in the ONNX file.

A good export
-------------
"""

import os
import tempfile

import matplotlib.pyplot as plt
import onnx
import torch
from onnx import numpy_helper

import diag
from diag.testing.perturb import node_scopes

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")
MAX_NEW_TOKENS = 12 if FAST else 30

MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
model, tokenizer = diag.load_pretrained(MODEL)
model.eval()
messages = [{"role": "user", "content": "What is the capital of France?"}]
text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
# verify=False: this page measures the agreement itself, step by step and layer by layer
good = diag.export_causal_lm(model, verify=False).filename
print("exported:", good)
# torch's answer ends with eos: the comparisons run that many steps, not past its end
answer = diag.generate(model, inputs.input_ids, inputs.attention_mask,
                       max_new_tokens=MAX_NEW_TOKENS, eos_token_id=tokenizer.eos_token_id,
                       return_result=True)  # fmt: skip
STEPS = answer.num_generated_tokens[0]
print(f"torch's answer: {answer.texts(tokenizer)[0]!r}")
print(f"{STEPS} tokens ({answer.finish_reasons[0]}): every comparison below runs {STEPS} steps")

df = diag.compare_teacher_forced(
    model, good, inputs.input_ids, inputs.attention_mask,
    max_new_tokens=STEPS, tokenizer=tokenizer,
)  # fmt: skip
cols = ["step", "text", "argmax_agree", "max_abs_diff", "top5_overlap", "kl_div", "torch_margin"]
print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
print(
    f"argmax agrees at {int(df.argmax_agree.sum())} of {len(df)} steps; largest logits "
    f"difference {df.max_abs_diff.max():.3g}, smallest torch margin {df.torch_margin.min():.3g}"
)
assert df.argmax_agree.all(), "the good export chooses another token than torch"

# %%
# With ``tokens=None`` the forced continuation is torch's own greedy choice, so
# the ``text`` column reads as torch's answer. A good export agrees at every
# step: logits differences at the level of float32 rounding (the largest is
# printed above), the same best token, the same top 5, a KL divergence near zero.
# ``torch_margin`` is the gap between the best and the second best logit: a token
# can only flip when the difference reaches the margin.

ax = diag.plot_teacher_forced(df, title=f"{MODEL}, good export: teacher-forced comparison")
ax.figure.tight_layout()
ax.figure.savefig(os.path.join(OUT, "plot_diagnose_good.png"))

# %%
# In free-running generation the two token streams are the same, and each
# decoder layer gives the same hidden states as in torch. The tolerance (1e-4)
# bounds a *scaled* difference: at each position, the largest absolute difference
# divided by the size (RMS, at least 1) of torch's hidden state there. Some hidden
# states hold activations in the thousands, whose float32 rounding alone is far
# above 1e-4 in absolute terms; the report quotes both.

div = diag.first_divergence(model, good, inputs.input_ids, inputs.attention_mask,
                            max_new_tokens=STEPS, tokenizer=tokenizer)  # fmt: skip
print(div)
assert not div, "the good export generates other tokens than torch"
report = diag.localize_layer(model, good, dict(inputs), tol=1e-4)
print(report)
assert report.culprit is None, f"the good export departs from torch at {report.culprit}"

# %%
# Breaking the export on purpose
# ------------------------------
#
# The dynamo exporter records, on every ONNX node, the stack of PyTorch modules
# it was traced in (metadata ``pkg.torch.onnx.name_scopes``). That is how
# :func:`diag.localize_layer` finds each layer's output in the graph, and how
# :func:`diag.testing.perturb_weight` finds the weight of the ``down_proj``
# projection of one decoder layer, to add noise to it, the way a faulty
# conversion or a corrupted file would.

LAYER = 1
proto = onnx.load(good)
target = diag.testing.perturb_weight(proto, f"layers.{LAYER}.mlp.down_proj", scale=0.05)
shape = tuple(next(t.dims for t in proto.graph.initializer if t.name == target))
# the broken copy is as large as the model; the last cell removes it
broken_dir = tempfile.TemporaryDirectory(prefix="diag_broken_")
broken = os.path.join(broken_dir.name, "broken.onnx")
onnx.save(proto, broken, save_as_external_data=not FAST, location="broken.onnx.data")
del proto
print(f"changed {target!r}, the down_proj weight of layer {LAYER}: {shape}")

# %%
# Teacher forcing on the broken export
# ------------------------------------
#
# The differences jump by orders of magnitude from the very first step (the
# prefill already runs through the broken layer) and the KL divergence with
# them; where the margin is small, the argmax flips (red crosses).

df_broken = diag.compare_teacher_forced(
    model, broken, inputs.input_ids, inputs.attention_mask,
    max_new_tokens=STEPS, tokenizer=tokenizer,
)  # fmt: skip
print(df_broken[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
first_bad = df_broken.loc[df_broken["max_abs_diff"] > 1e-3, "step"]
print(
    "first step with a logits difference above 1e-3:",
    int(first_bad.min()) if len(first_bad) else None,
)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
diag.plot_teacher_forced(df, ax=ax1, title=f"{MODEL}, good export")
diag.plot_teacher_forced(
    df_broken, ax=ax2, title=f"{MODEL}, broken export (layer {LAYER} perturbed)"
)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_diagnose_broken.png"))

# %%
# First divergence
# ----------------
#
# Free-running, the two generations part at the step printed below, with each
# side's five best candidates. The margins (best minus second best logit) say
# whether the models hesitated: a divergence where both margins are of the order
# of the usual difference between the runtimes (measured on the steps before,
# where the tokens agreed) is a near tie, a benign rounding effect. With a
# broken layer the prefill is already wrong, so the streams may part at the very
# first token; the teacher-forced table above is then the evidence.

div = diag.first_divergence(model, broken, inputs.input_ids, inputs.attention_mask,
                            max_new_tokens=STEPS, tokenizer=tokenizer)  # fmt: skip
print(div)
if div:
    print("torch:", repr(tokenizer.decode(div.reference_tokens)))
    print("onnx: ", repr(tokenizer.decode(div.other_tokens)))

# %%
# Which layer?
# ------------
#
# The embeddings and the layers before the perturbed one agree; the perturbed
# layer is the first beyond the tolerance, and every later stage inherits its
# error.

report = diag.localize_layer(model, broken, dict(inputs), tol=1e-4)
print(report)
print("culprit:", report.culprit)
assert report.culprit_layer == LAYER, f"localize_layer blamed {report.culprit}, not layer {LAYER}"

ax = diag.plot_layers(report, title=f"{MODEL}: first stage beyond tolerance: {report.culprit}")
ax.figure.tight_layout()
ax.figure.savefig(os.path.join(OUT, "plot_diagnose_layers.png"))

# %%
# A corruption that shows up mid-way
# ----------------------------------
#
# A broken layer is wrong from the first step. Other bugs only bite on some
# inputs. Here the embedding lookup of the ONNX model reads a copy of the token
# table where one row, the one of a token torch generates a few steps into its
# answer, is corrupted (the ``lm_head``, which may share that table, is left
# alone). Both models agree until they *read* that token: the step right after
# it is generated.

torch_stream = df["token"].tolist()  # torch's greedy answer (teacher forcing above)
seen = set(inputs.input_ids[0].tolist())
k = next(
    i for i, t in enumerate(torch_stream) if i >= 3 and t not in seen and t not in torch_stream[:i]
)
token = torch_stream[k]
proto = onnx.load(good)
initializers = {t.name: t for t in proto.graph.initializer}
lookup = next(
    n
    for n in proto.graph.node
    if n.op_type == "Gather" and any(s.endswith("embed_tokens") for s in node_scopes(n))
)
table = numpy_helper.to_array(initializers[lookup.input[0]]).copy()
table[token] *= 50.0
proto.graph.initializer.append(numpy_helper.from_array(table, "corrupted_embed_tokens"))
original, lookup.input[0] = lookup.input[0], "corrupted_embed_tokens"
if not any(original in n.input for n in proto.graph.node):  # not tied: drop the old table
    proto.graph.initializer.remove(initializers[original])
print(
    f"corrupted the embedding of token {token} {tokenizer.decode([token])!r}, generated at step {k}"
)

df_mid = diag.compare_teacher_forced(model, proto, inputs.input_ids, inputs.attention_mask,
                                     max_new_tokens=STEPS, tokenizer=tokenizer)  # fmt: skip
print(df_mid[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
jump = df_mid.loc[df_mid["max_abs_diff"] > 1e-3, "step"]
print(
    f"first step with a logits difference above 1e-3: {int(jump.min())} (token read at step {k + 1})"
)
assert int(jump.min()) == k + 1, "the logits part before or after the corrupted token is read"

ax = diag.plot_teacher_forced(
    df_mid, title=f"{MODEL}: token {token} corrupted in the embedding lookup"
)
ax.axvline(k + 1, color="black", linestyle=":", linewidth=1)
ax.figure.tight_layout()
ax.figure.savefig(os.path.join(OUT, "plot_diagnose_midway.png"))

# %%
# Teacher forcing pins the step down: float32-level differences up to step
# ``k``, then a jump of several orders of magnitude at step ``k + 1``, the first
# step whose input contains the corrupted token (dotted line).
#
# Free-running, the tokens may or may not part there: a model sure of its next
# token (a large margin) chooses it even from damaged inputs. When they do part,
# :func:`diag.first_divergence` reports that step and, since the steps before
# agreed to float32 precision, a confident verdict. When they do not, the
# corruption is invisible to any comparison of the generated tokens, and only
# the teacher-forced logits reveal it.

div = diag.first_divergence(model, proto, inputs.input_ids, inputs.attention_mask,
                            max_new_tokens=STEPS, tokenizer=tokenizer)  # fmt: skip
print(div)

# %%
# :func:`diag.localize_layer` on a prompt that contains the token names the
# embeddings, before any decoder layer.

with_token = {"input_ids": torch.cat([inputs.input_ids, torch.tensor([[token]])], dim=1)}
print(diag.localize_layer(model, proto, with_token))

# %%
# Clean up
# --------
#
# The broken copy goes with its temporary directory.

broken_dir.cleanup()
