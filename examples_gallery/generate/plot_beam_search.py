"""
.. _l-plot-beam-search:

Beam search with an explicit cache
==================================

Greedy decoding keeps one hypothesis and extends it by its most probable token.
It can miss a better text: a token slightly less probable now may lead to much
more probable tokens after it. Beam search keeps ``num_beams`` hypotheses at
once. At every step:

1. each hypothesis is extended by every token of the vocabulary, its *score*
   (the sum of the log-probabilities of its tokens) plus the token's
   log-probability;
2. the ``num_beams`` best extensions over all hypotheses become the next
   hypotheses: a good hypothesis may continue twice, a poor one disappears;
3. a hypothesis that ends (an eos token, the maximum length) leaves the beam
   for the *finished* ones, ranked by ``score / length ** length_penalty``.

The batch holds one row per hypothesis, and so does the key/value cache. After a
step, row ``i`` continues the row ``rows[i]`` of the step before: the cache
must follow, every tensor of it gathered along the batch by ``rows``
(the *reorder*). This page runs the algorithm step by step on
SmolLM2-135M-Instruct with :class:`diag.generation.beam_search.BeamSearch`
and the cache passed by hand, plots which hypotheses survive, checks that
:func:`diag.generate` and :func:`diag.onnx_generate` give ``model.generate``'s
beams, and times beam search against greedy decoding in PyTorch and in ONNX
Runtime. With ``DIAG_FAST=1`` it runs on a tiny untrained model (random
tokens, same code).

The model and the prompt
------------------------
"""

import os

import matplotlib.pyplot as plt
import pandas
import torch

import diag
from diag.generation import DecodingOptions, TorchBackend, open_steps, prompt_position_ids
from diag.generation.beam_search import BeamSearch
from diag.helpers import string_type
from diag.helpers.timing import Spread, alternate, spread_of
from diag.helpers.wrap import wrap_report
from diag.ort.cache_reorder import reorder_model

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")  # where the figures are saved
MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
NEW_TOKENS = 8 if FAST else 20
NUM_BEAMS = 4
ROUNDS = 3  # each speed below is the median of ROUNDS alternated rounds
SHOWN = 3  # the steps printed in full

model, tokenizer = diag.load_pretrained(MODEL)
model.eval()
prompt = "The three things to pack for a day in the mountains are"
inputs = tokenizer(prompt, return_tensors="pt")
input_ids = inputs.input_ids
n_prompt = input_ids.shape[1]
print(f"{MODEL}: {n_prompt} prompt tokens, {NUM_BEAMS} beams, {NEW_TOKENS} new tokens")

# %%
# Every generation below ignores the eos token (``eos_token_id=None``): each
# hypothesis runs ``NEW_TOKENS`` tokens, so that every contender does the same
# work. The section "Same beams as model.generate" puts the eos back.

beam_kwargs = dict(
    max_new_tokens=NEW_TOKENS, num_beams=NUM_BEAMS, do_sample=False, eos_token_id=None
)
expected = model.generate(**inputs, **beam_kwargs)
greedy = model.generate(**inputs, **{**beam_kwargs, "num_beams": 1})
print(wrap_report(f"beam search: {tokenizer.decode(expected[0, n_prompt:])!r}"))
print(wrap_report(f"greedy:      {tokenizer.decode(greedy[0, n_prompt:])!r}"))

# %%
# The algorithm step by step
# --------------------------
#
# The loop below is beam search with the cache passed by hand. The model runs
# on a :class:`diag.generation.TorchBackend` (``prefill`` on the prompt,
# ``decode`` on one token per row with the cache, ``reorder`` of the cache by
# rows); the hypotheses are a
# :class:`~diag.generation.beam_search.BeamSearch`, the bookkeeping that
# :func:`diag.generate` runs: ``step`` takes the log-probabilities of every row
# and returns the token each next hypothesis appends (``step.tokens``) and the
# row it continues (``step.rows``).
#
# The prompt is repeated ``NUM_BEAMS`` times, one row per hypothesis; at the
# start only the first row counts (the others are scored out), so that the first
# step does not pick the same continuation ``NUM_BEAMS`` times.

backend = TorchBackend(model)
# all the finished hypotheses are returned, for the plot below
options = DecodingOptions(
    max_new_tokens=NEW_TOKENS, num_beams=NUM_BEAMS, num_return_sequences=NUM_BEAMS
)
beams = BeamSearch(options, batch_size=1, prompt_length=n_prompt, fill=-1)

sequences = input_ids.repeat(NUM_BEAMS, 1)  # [num_beams, prompt]
mask = torch.ones_like(sequences)
positions = prompt_position_ids(mask)
logits, past = backend.prefill(sequences, mask, positions)
history = []  # per step: the rows continued and the scores after the step
for step in range(NEW_TOKENS):
    log_probs = torch.log_softmax(logits, dim=-1)  # [num_beams, vocab]
    chosen = beams.step(sequences, log_probs)
    sequences = torch.cat([sequences[chosen.rows], chosen.tokens[:, None]], dim=1)
    scores = beams.running_scores[0].clone()
    history.append(dict(rows=chosen.rows, scores=scores))
    if step < SHOWN:
        print(f"step {step}: rows {chosen.rows.tolist()}, tokens {chosen.tokens.tolist()}")
        for i in range(NUM_BEAMS):
            text = tokenizer.decode(sequences[i, n_prompt:])[-36:]
            row = int(chosen.rows[i])
            print(f"  hypothesis {i} (row {row}) {float(scores[i]):7.3f} {text!r}")
    if beams.done:
        break
    # the cache follows the hypotheses, then one token per row
    past = backend.reorder(past, chosen.rows)
    mask = torch.ones_like(sequences)
    positions = positions[:, -1:] + 1
    logits, past = backend.decode(chosen.tokens[:, None], mask, positions, past)
best = beams.finish()
print(wrap_report(f"best: {tokenizer.decode(best.sequences[0, n_prompt:])!r}"))
print(f"its score: {float(best.scores[0]):.4f} (sum of log-probabilities / length)")
assert best.sequences[:1].tolist() == expected.tolist(), "the loop differs from model.generate"

# %%
# A few dozen lines give ``model.generate``'s beam search: the assertion above
# compares the tokens. The scores are not probabilities of one token but sums
# over the whole hypothesis: they only decrease, and a hypothesis that picked a
# less probable token early can still overtake the others.
#
# What the reorder did to the cache: each layer keeps a key and a value tensor
# ``[num_beams, key/value heads, positions, head size]``; row ``i`` of each is
# now the row ``rows[i]`` of the step before (transformers' own
# ``reorder_cache``, as ``model.generate`` calls it).

print("cache:", string_type(past, with_shape=True)[:66], "...")

# %%
# Which hypotheses survive
# ------------------------
#
# Each point is a hypothesis after a step, at its score (the sum of the
# log-probabilities of its tokens) minus the best score of that step, so that
# the best of each step is at 0; each grey line joins it to the hypothesis it
# continues. Branches that stop were overtaken. At the last
# step, every hypothesis reaches the maximum length and is finished. The red
# path is the best finished hypothesis, found back through its
# ``beam_indices`` (the row each of its tokens came from); the dashed line is
# greedy decoding's hypothesis, scored the same way.

with torch.no_grad():
    greedy_logits = model(greedy).logits[0, n_prompt - 1 : -1]
greedy_tokens = greedy[0, n_prompt:]
greedy_scores = torch.log_softmax(greedy_logits.float(), -1)[
    torch.arange(len(greedy_tokens)), greedy_tokens
].cumsum(0)

fig, ax = plt.subplots(figsize=(10, 5))
length = best.lengths[0]
# the last step: the finished hypotheses (their score without the length penalty,
# their row at the step before)
last = dict(
    rows=best.beam_indices[:, length - 1],
    scores=best.scores * length**options.length_penalty,
)
points = history[: length - 1] + [last]
# the scores only decrease: each is drawn as its gap to the step's best score
top = [float(h["scores"].max()) for h in points]
for t, h in enumerate(points):
    for i in range(NUM_BEAMS):
        y = float(h["scores"][i]) - top[t]
        if t > 0:
            parent = float(points[t - 1]["scores"][h["rows"][i]]) - top[t - 1]
            ax.plot([t - 1, t], [parent, y], color="#bbbbbb", lw=1)
        ax.plot(t, y, "o", color="#4c72b0", ms=3)
# the best hypothesis: at step t (t < last) it was the running row beam_indices[t + 1]
path = best.beam_indices[0].tolist()
best_scores = [float(points[t]["scores"][path[t + 1]]) for t in range(length - 1)]
best_scores.append(float(last["scores"][0]))
best_gaps = [score - top[t] for t, score in enumerate(best_scores)]
ax.plot(range(length), best_gaps, color="#c44e52", lw=2, label="best hypothesis")
for t, token in enumerate(best.sequences[0, n_prompt : n_prompt + length].tolist()):
    word = tokenizer.decode([token]).strip() or repr(tokenizer.decode([token]))
    ax.annotate(word[:10], (t, best_gaps[t]), fontsize=7, rotation=40, xytext=(2, 4),
                textcoords="offset points")  # fmt: skip
greedy_gaps = [float(greedy_scores[t]) - top[t] for t in range(length)]
ax.plot(range(length), greedy_gaps, "--", color="black", label="greedy")
low, _ = ax.get_ylim()
ax.set_ylim(low, -0.2 * low)  # room for the words above the best scores
ax.set_xticks(range(length))
ax.set_xlabel("new token")
ax.set_ylabel("score - the step's best score")
ax.set_title(f"{MODEL}: the {NUM_BEAMS} hypotheses of each step")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_beam_search.png"))

gain = best_scores[-1] - float(greedy_scores[-1])
print(f"best hypothesis {best_scores[-1]:.3f}, greedy {float(greedy_scores[-1]):.3f}: {gain:+.3f}")

# %%
# Same beams as ``model.generate``
# --------------------------------
#
# :func:`diag.generate` and :func:`diag.onnx_generate` run that bookkeeping in
# their shared loop, now with the eos token: a hypothesis ending with it leaves
# the beam. ``num_return_sequences`` returns the best finished hypotheses, with
# their ``sequences_scores`` and ``beam_indices`` like ``model.generate``.
#
# The export goes to diag's export cache: the tour's export of the same model is
# reused (the cache keeps within ``DIAG_CACHE_MAX_GB``).

export = diag.export_causal_lm(model)
onnx_backend = open_steps(export.filename).backend

full = dict(
    max_new_tokens=NEW_TOKENS,
    num_beams=NUM_BEAMS,
    num_return_sequences=2,
    do_sample=False,
    eos_token_id=tokenizer.eos_token_id,
)
hf = model.generate(**inputs, **full, output_scores=True, return_dict_in_generate=True)
pt = diag.generate(model, input_ids, inputs.attention_mask, return_result=True, **full)
ox = diag.onnx_generate(onnx_backend, input_ids, inputs.attention_mask, return_result=True, **full)
for i in range(2):
    text = tokenizer.decode(hf.sequences[i, n_prompt:], skip_special_tokens=True)
    print(f"{i}: model.generate {float(hf.sequences_scores[i]):.4f} "
          f"diag.generate {float(pt.sequences_scores[i]):.4f} "
          f"onnx_generate {float(ox.sequences_scores[i]):.4f}")  # fmt: skip
    print(wrap_report(f"   {text!r}"))
score_gap = float((ox.sequences_scores - hf.sequences_scores).abs().max())
print(f"ONNX Runtime's scores differ by {score_gap:.2e} at most (other kernels)")

assert pt.sequences.tolist() == hf.sequences.tolist(), "diag.generate differs"
assert torch.equal(pt.sequences_scores, hf.sequences_scores), "diag.generate's scores differ"
assert ox.sequences.tolist() == hf.sequences.tolist(), "onnx_generate differs"

# %%
# :func:`diag.generate` computes what ``model.generate`` computes, in the same
# order: its scores are equal bit for bit. ONNX Runtime computes the logits with
# other kernels, so its scores differ in the last digits; the beams are the
# same as long as no two candidates are nearer than that (see
# :ref:`l-plot-parity` for the size of those differences).
#
# The cache reorder in ONNX Runtime
# ---------------------------------
#
# :func:`diag.onnx_generate` keeps the cache in ONNX Runtime (OrtValues bound
# between steps), so the reorder must not bring it back to Python: it is one
# small ONNX graph, one ``Gather`` along the batch per cache tensor
# (:mod:`diag.ort.cache_reorder`), run with IO binding on the OrtValues the step
# returned, on the model's device.

layers = model.config.num_hidden_layers
graph = reorder_model([1] * 2 * layers).graph  # 1: float
print(f"{len(graph.node)} nodes, {sorted({n.op_type for n in graph.node})}:")
print(f"  {graph.node[0].op_type}({', '.join(graph.node[0].input)}) -> {graph.node[0].output[0]}")

# %%
# What one reorder costs next to a decode step: the prompt, then the two
# alternated on the same cache (a reorder by rows ``[0, 0, 1, 2]``: row 0
# continues twice, row 3 is dropped). The reorder copies the cache once, a decode
# step reads every weight of the model: on a quiet machine the reorder is a small
# share of the step. A burst of load from another program delays a short call as
# much as a long one, so the share is given from the medians and from the
# fastest rounds, the least disturbed ones.

ids = input_ids.repeat(NUM_BEAMS, 1)
mask = torch.ones_like(ids)
logits, ort_past = onnx_backend.prefill(ids, mask, prompt_position_ids(mask))
next_ids = logits.argmax(-1, keepdim=True)
mask = torch.ones((NUM_BEAMS, n_prompt + 1), dtype=torch.long)
next_positions = torch.full((NUM_BEAMS, 1), n_prompt)
rows = torch.tensor([0, 0, 1, 2])
print("ONNX Runtime cache:", type(ort_past).__name__, "of", len(ort_past), "OrtValues",
      ort_past[0].shape())  # fmt: skip
timed = alternate(
    {
        "reorder": lambda: onnx_backend.reorder(ort_past, rows),
        "decode step": lambda: onnx_backend.decode(next_ids, mask, next_positions, ort_past),
    },
    rounds=20,
)
reorder_ms = spread_of(timed["reorder"]).scaled(1e3)
step_ms = spread_of(timed["decode step"]).scaled(1e3)
print(f"reorder {reorder_ms:.2f} ms, decode step {step_ms:.1f} ms")
by_median = 100 * reorder_ms.median / step_ms.median
by_fastest = 100 * reorder_ms.low / step_ms.low
print(f"the reorder: {by_median:.1f}% of a step (medians), {by_fastest:.1f}% (fastest rounds)")

# %%
# How fast?
# ---------
#
# Beam search with ``NUM_BEAMS`` hypotheses runs each step on ``NUM_BEAMS``
# rows: more work per step than greedy decoding, but not ``NUM_BEAMS`` times
# more on the CPU, where a decode step of a small model mostly reads its
# weights, once for all rows. ``model.generate`` and :func:`diag.onnx_generate`,
# greedy and beam search, run in turn, round after round
# (:func:`diag.helpers.timing.alternate`), each figure the median of the rounds
# with the lowest and the highest in brackets.

greedy_kwargs = {**beam_kwargs, "num_beams": 1}
contenders = {
    "model.generate greedy": lambda: model.generate(**inputs, **greedy_kwargs),
    "model.generate beams": lambda: model.generate(**inputs, **beam_kwargs),
    "onnx_generate greedy": lambda: diag.onnx_generate(onnx_backend, input_ids, **greedy_kwargs),
    "onnx_generate beams": lambda: diag.onnx_generate(onnx_backend, input_ids, **beam_kwargs),
}
runs = alternate(contenders, rounds=ROUNDS)
speed = {name: spread_of(rs).inverse(NEW_TOKENS) for name, rs in runs.items()}
table = pandas.DataFrame({"tokens/s (lowest-highest)": {n: f"{s:.1f}" for n, s in speed.items()}})
print(f"{NEW_TOKENS} new tokens, batch 1, median of {ROUNDS} rounds:")
print(table.to_string())


def ratio(slow: str, fast: str) -> Spread:
    """``slow``'s seconds over ``fast``'s, round by round (one round, one load)."""
    return Spread.of(a.seconds / b.seconds for a, b in zip(runs[slow], runs[fast], strict=True))


for backend_name in ("model.generate", "onnx_generate"):
    cost = ratio(f"{backend_name} beams", f"{backend_name} greedy")
    print(f"{backend_name}: {NUM_BEAMS} beams take {cost:.2f}x greedy's time")
speedup = ratio("model.generate beams", "onnx_generate beams")
print(f"onnx_generate's beams: {speedup:.2f}x as fast as model.generate's")

# %%
# The same in a plot, bars at the median, lines from the lowest to the highest
# round.

fig, ax = plt.subplots(figsize=(8, 4))
names = list(speed)
bars = ax.bar(
    [n.replace(" ", "\n", 1) for n in names],
    [speed[n].median for n in names],
    yerr=[
        [speed[n].median - speed[n].low for n in names],
        [speed[n].high - speed[n].median for n in names],
    ],
    capsize=4,
    color=["#4c72b0", "#8da0cb", "#c44e52", "#e5a0a2"],
)
ax.bar_label(bars, fmt="%.1f", fontsize=8, label_type="center")
ax.set_ylabel("new tokens per second")
ax.set_title(f"{MODEL}, greedy vs {NUM_BEAMS} beams, {NEW_TOKENS} tokens, CPU")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "plot_beam_search_speed.png"))
