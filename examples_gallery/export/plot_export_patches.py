"""
.. _l-plot-export-patches:

Exporting a causal LM with its cache: why patches, which ones
=============================================================

:func:`torch.export.export` runs the model once on example inputs and records
every tensor operation into a graph; :func:`diag.to_onnx` then translates that
graph into ONNX. A causal LM with a key/value cache does not export as it is:
some of its Python objects and code paths are not traceable, or would be traced
into a graph that only works for the example inputs.
:func:`diag.torch_export_patches` fixes that while the export runs and undoes
everything on exit. This page

* shows the export failing without the patches,
* lists what each patch does,
* exports, and shows the inputs and outputs of the ONNX model.

A tiny untrained model of the same architecture as SmolLM2 (llama) demonstrates
the export itself, it takes seconds; the last section reads the real exported
SmolLM2.

The model and its example inputs
--------------------------------
"""

import os
import textwrap
import traceback

import onnx
import pandas
import torch

import diag
from diag.export.make.patches import (
    EXPERTS_PATCHES,
    ROUTER_PATCHES,
    TORCH_PATCHES,
    TRANSFORMERS_PATCHES,
)
from diag.helpers import string_type

FAST = os.environ.get("DIAG_FAST", "0") == "1"
OUT = os.environ.get("DIAG_GALLERY_OUT", ".")

data = diag.get_untrained_model_with_inputs("llama")
model, inputs, dynamic_shapes = data["model"], data["inputs"], data["dynamic_shapes"]
print("inputs:", string_type(inputs, with_shape=True))
batch, new = inputs["input_ids"].shape
past = inputs["attention_mask"].shape[1] - new  # the mask covers the cache and the new tokens
print(f"one decoding step: {new} new tokens after {past} cached positions, batch of {batch}")


def dim_names(spec):
    """``{axis: Dim}`` as ``{axis: name}``, for a short print of dynamic shapes."""
    if isinstance(spec, (list, tuple)):
        return [dim_names(s) for s in spec]
    return {axis: getattr(d, "__name__", "dynamic") for axis, d in spec.items()}


for name, spec in dynamic_shapes.items():
    print(f"dynamic shapes of {name}: {dim_names(spec)}")

# %%
# The inputs describe one decoding step in the middle of a generation: a few new
# tokens after a few cached positions, for a batch of several rows (the counts are
# printed above). The cache is a
# :class:`transformers.DynamicCache` (``DC`` above): one key and one value tensor
# per layer. The dynamic shapes name the dimensions that vary from call to call
# (batch, sequence length, cache length), so that the exported graph accepts any
# value, not only the example's.
#
# Without the patches
# -------------------

try:
    torch.export.export(model, (), kwargs=inputs, dynamic_shapes=dynamic_shapes, strict=False)
    print("exported without patches")
except Exception as e:
    lines = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()
    print(f"{type(e).__name__}, first lines of the message:\n")
    for line in lines[:4]:
        print(textwrap.fill(line, width=80, subsequent_indent="    "))

# %%
# :func:`torch.export.export` only sees the tensors held by containers it knows
# how to flatten (lists, tuples, dicts, registered classes). The cache classes of
# transformers are not registered, so the cache cannot be an input of the graph.
#
# What each patch does
# --------------------
#
# Registering the cache classes as pytree nodes (:mod:`diag.export.make.cache_pytree`)
# is the first thing :func:`diag.torch_export_patches` does. The others replace
# a function for the duration of the export. Each has a target (the attribute
# replaced) and a reason (what goes wrong without it). A target missing from the
# installed version is skipped with a note, so a new release of torch or
# transformers never breaks the import.

for patch in TORCH_PATCHES + TRANSFORMERS_PATCHES + EXPERTS_PATCHES + ROUTER_PATCHES:
    print(f"* {patch.name} [{patch.kind}]\n  replaces {patch.target}")
    print(textwrap.fill(f"why: {patch.why}", width=80, initial_indent="  ", subsequent_indent="  "))

# %%
# With the patches
# ----------------
#
# The same call inside the context manager, which says what it did. The graph now
# takes the cache as a flat list of tensors and returns the new cache the same
# way; the names are the exporter's (``cat_3`` is the output of a concatenation),
# :func:`diag.export_causal_lm` renames them after the contract.

with diag.torch_export_patches() as report:
    ep = torch.export.export(model, (), kwargs=inputs, dynamic_shapes=dynamic_shapes, strict=False)
print("pytree nodes registered:", report.pytree_nodes)
print("patches applied:", report.applied)
print("patches skipped:", report.skipped)
print(
    "graph inputs: ",
    [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"],
)
print("graph outputs:", [s.arg.name for s in ep.graph_signature.output_specs])
print("the FX graph has", len(ep.graph.nodes), "nodes")

# %%
# Exporting to ONNX
# -----------------
#
# :func:`diag.export_causal_lm` does all of this for a causal LM: it builds the
# example inputs and dynamic shapes, exports under the patches, names inputs and
# outputs after :doc:`the export contract </contract>`, checks the ONNX model
# against PyTorch, and caches the result. The real model here (the tiny one with
# ``DIAG_FAST=1``):

MODEL = "tiny:llama" if FAST else "smollm2-135m-instruct"
real, _tokenizer = diag.load_pretrained(MODEL)
exported = diag.export_causal_lm(real)
path = exported.filename
onx = onnx.load(str(path), load_external_data=False)  # the graph, not the weights


def describe(value_info):
    """Name, element type and shape (symbolic dimensions by name) of a graph input/output."""
    t = value_info.type.tensor_type
    dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
    return dict(
        name=value_info.name,
        type=onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
        shape=f"[{', '.join(dims)}]",
    )


def head_and_tail(rows, n=4):
    """The first and last rows: the cache repeats the same pattern for every layer."""
    return rows if len(rows) <= 2 * n else rows[:n] + [dict(name="...")] + rows[-n:]


print(f"{len(onx.graph.input)} inputs:")
print(
    pandas.DataFrame(head_and_tail([describe(v) for v in onx.graph.input])).fillna("").to_string()
)
print(f"\n{len(onx.graph.output)} outputs:")
print(
    pandas.DataFrame(head_and_tail([describe(v) for v in onx.graph.output])).fillna("").to_string()
)

# %%
# The dimensions written as names or expressions are dynamic (the batch, the
# number of new tokens, the cache length): one ONNX model runs the prefill (an
# empty cache) and every decode step (one new token), for any batch size. The ``present.*`` outputs are the next step's
# ``past_key_values.*`` inputs; :func:`diag.onnx_generate` keeps them in ONNX
# Runtime memory between steps.
#
# What the graph is made of: its operators, counted.

ops = pandas.Series([n.op_type for n in onx.graph.node]).value_counts()
print(ops.head(15).to_string())
ax = (
    ops.head(15)
    .sort_values()
    .plot(kind="barh", figsize=(7, 5), title=f"{MODEL}: most frequent ONNX operators")
)
ax.set_xlabel("number of nodes")
ax.figure.tight_layout()
ax.figure.savefig(os.path.join(OUT, "plot_export_patches.png"))

# %%
# No ``Pow``/``ReduceMean``/``Sqrt`` chains, no ``Slice``/``Neg``/``Concat`` for the
# rotary embedding, no ``Expand`` of the cache to the number of query heads: after
# the exporter and the onnxscript optimizer, :func:`diag.export_causal_lm` rewrote
# the decoder's patterns into the operators made for them
# (:func:`diag.export.make.rewrite.fuse_decoder`): ONNX's own where the standard has one
# (the opset printed below) and ONNX Runtime's contrib operators (domain
# ``com.microsoft``) where it does not, such as the residual sum with the next norm.
# Each rewrite checks the whole pattern; the validation then compares the result
# with PyTorch as for any export. How many times each one fired (per layer: two
# norms, q and k rotated, one attention, two packed products; and the final norm):

print(pandas.Series(exported.fusions, name="times").to_string())
opset = next(o.version for o in onx.opset_import if o.domain in ("", "ai.onnx"))
print(f"{len(onx.graph.node)} nodes in the graph, opset {opset}; nodes per operator domain:")
domains = pandas.Series([n.domain or "ai.onnx (standard)" for n in onx.graph.node])
print(domains.value_counts().to_string())
contrib = sorted({n.op_type for n in onx.graph.node if n.domain == "com.microsoft"})
print("com.microsoft operators:", ", ".join(contrib) or "none")
