"""The ONNX side of :func:`~diag.diagnose.layers.localize_layer`: which values of the
graph are the stages' outputs, and a session that returns them.

The file is read as it is (re-exporting with ``output_hidden_states=True`` would
diagnose another file), as an :class:`onnx_ir.Model`, and two methods find the values:

1. **Module scopes** (preferred, :func:`candidates_from_scopes`). The dynamo exporter
   of ``torch.onnx`` stores on every node the stack of modules it was traced in
   (metadata ``pkg.torch.onnx.name_scopes``, e.g. ``['', 'model', 'model.model',
   'model.model.layers.2', 'add_1046']``, or the older ``namespace`` string). The nodes
   of module ``model.layers.2`` are those whose scope ends with that qualified name (an
   export wrapper may add a prefix); the module's outputs are the values these nodes
   produce and some node outside the module (or the graph output) consumes. This
   survives the exporter's own optimisation (constant folding, transposed weights
   renamed ``val_*``) because rewritten nodes inherit the metadata.
2. **Residual stream** (fallback, :func:`candidates_from_residuals`, for graphs without
   the metadata: other exporters, tools that drop metadata). Every pre-norm decoder
   (llama, mistral, qwen, phi3, gemma, gpt2...) adds two residual branches per layer,
   so the hidden states follow a chain of ``Add`` nodes whose both inputs are computed
   values: starting from the embedding ``Gather``, each element of the chain is
   consumed by the next residual ``Add``. The last ``2 * num_layers`` links of the
   chain are the residual sums; layer ``i``'s output is link ``2 * i + 1``. A residual
   sum fused with the next norm (``com.microsoft.SkipSimplifiedLayerNormalization``,
   diag's fused exports and onnxruntime-genai's builder) is its 4th output; genai's
   final norm does not return it, so the node is given that output
   (:func:`_expose_residual_sum`), and genai's embedding table is the tied lm_head
   weight transposed.
   Parallel-attention architectures (one residual sum per layer) do not fit and raise
   a clear error.

:func:`session_with_outputs` adds the chosen values as graph outputs and opens the
session at the basic optimisation level, so that no fusion hides a value; models over
protobuf's 2 GB go through :func:`diag.ort.session.make_session`'s external-data path.

>>> import onnx_ir as ir
>>> x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
>>> node = ir.node("Relu", [x], metadata_props={NAME_SCOPES: "['', 'model.layers.0']"})
>>> node_scopes(node)
['', 'model.layers.0']
"""

from __future__ import annotations

import ast
import os
from typing import Any

import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx_ir.passes.common import ShapeInferencePass

from diag import contract
from diag.contract.files import load_onnx
from diag.contract.metadata import OUTPUT_SCOPES_METADATA
from diag.diagnose.layers.stages import Stage
from diag.ort.session import Providers, make_session

#: the node metadata of the dynamo exporter: the stack of module names a node was traced in
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
#: the older exporters' spelling: ``"name: Class/name.sub: Class/op: target"``
NAMESPACE = "namespace"

# ops that only move a value between the residual stream and what reads it
_PASS_THROUGH = ("Reshape", "Cast", "Identity")


def load_model(onnx_model: Any) -> ir.Model:
    """An :class:`onnx_ir.Model` of a path or an ``onnx.ModelProto`` that this module may
    modify (the caller's proto is left as it is)."""
    if isinstance(onnx_model, onnx.ModelProto):
        return ir.serde.deserialize_model(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        # loaded whole (external data included): the session is built from memory
        return ir.serde.deserialize_model(load_onnx(onnx_model, load_external_data=True))
    raise TypeError(
        "localize_layer needs the ONNX model itself (a path or an onnx.ModelProto) to expose "
        f"intermediate values as outputs; got {type(onnx_model).__name__}. An InferenceSession "
        "cannot be modified: pass the file it was created from."
    )


def node_scopes(node: ir.Node) -> list[str] | None:
    """The module names a node was traced in, from its metadata (None when absent)."""
    props = node.metadata_props
    if NAME_SCOPES in props:
        try:
            scopes = ast.literal_eval(props[NAME_SCOPES])
            return [str(s) for s in scopes]
        except (ValueError, SyntaxError):
            pass
    if NAMESPACE in props:
        # "name: Class/name.sub: Class/op: target" -> module names
        return [part.split(":", 1)[0].strip() for part in props[NAMESPACE].split("/")]
    return None


def output_scopes(node: ir.Node) -> list[str] | None:
    """The module names of the node's last output when they differ from the node's
    (:data:`~diag.contract.metadata.OUTPUT_SCOPES_METADATA`), None otherwise."""
    text = node.metadata_props.get(OUTPUT_SCOPES_METADATA)
    if text is None:
        return None
    try:
        return [str(s) for s in ast.literal_eval(text)]
    except (ValueError, SyntaxError):
        return None


def _in_scope(scopes: list[str], qualname: str) -> bool:
    return any(s == qualname or s.endswith("." + qualname) for s in scopes)


def candidates_from_scopes(model_ir: ir.Model, stages: list[Stage]) -> dict[str, list[str]] | None:
    """For each stage (but the logits), the names of the values its module's nodes
    produce and something outside the module reads, in graph order; None when no node
    has scope metadata."""
    nodes = list(model_ir.graph)
    scopes = [node_scopes(n) for n in nodes]
    if not any(s for s in scopes):
        return None
    # a fused node whose last output ends another module (a residual sum fused with the
    # next norm: diag.export.make.rewrite.skip_norm) names that module's scopes
    last_scopes = [output_scopes(n) for n in nodes]
    result: dict[str, list[str]] = {}
    for st in stages:
        if st.kind == "logits":
            continue
        members = {id(n) for n, s in zip(nodes, scopes, strict=True) if s and _in_scope(s, st.name)}
        cands = []
        for node, node_scope, last in zip(nodes, scopes, last_scopes, strict=True):
            for k, out in enumerate(node.outputs):
                tagged = last is not None and k == len(node.outputs) - 1
                owner = last if tagged else node_scope
                if not out.name or not owner or not _in_scope(owner, st.name):
                    continue
                # a module's output is read outside it (the last layer's sum may be unread)
                if tagged or out.is_graph_output() or any(id(u.node) not in members for u in out.uses()):
                    cands.append(out.name)
        if cands:
            result[st.name] = cands
    return result


def _is_constant(value: ir.Value | None) -> bool:
    if value is None:
        return False
    producer = value.producer()
    return value.is_initializer() or (producer is not None and producer.op_type == "Constant")


def _is_constant_table(value: ir.Value | None) -> bool:
    """A constant, or a constant transposed (onnxruntime-genai's builder looks the
    embeddings up in ``Transpose(lm_head weight)`` when the two are tied)."""
    while value is not None and value.producer() is not None and value.producer().op_type in ("Transpose", *_PASS_THROUGH):
        value = value.producer().inputs[0]
    return _is_constant(value)


def _before_pass_through(value: ir.Value) -> ir.Value:
    """The value a chain of Reshape / Cast / Identity nodes started from."""
    node = value.producer()
    while node is not None and node.op_type in _PASS_THROUGH:
        value = node.inputs[0]
        node = value.producer()
    return value


def _skip_norm_adding(node: ir.Node, value: ir.Value) -> bool:
    """True when ``node`` is a residual sum fused with the next norm
    (``com.microsoft.SkipSimplifiedLayerNormalization``, diag's and onnxruntime-genai's)
    adding ``value``."""
    return (
        node.op_type in ("SkipSimplifiedLayerNormalization", "SkipLayerNormalization")
        and node.domain == "com.microsoft"
        and value in node.inputs[:2]
    )


def _residual_sum_of(node: ir.Node, value: ir.Value) -> bool:
    """True when ``node`` is :func:`_skip_norm_adding` ``value`` and returns the sum
    (its 4th output, named)."""
    return _skip_norm_adding(node, value) and len(node.outputs) > 3 and bool(node.outputs[3].name)


def _expose_residual_sum(graph: ir.Graph, node: ir.Node) -> None:
    """Makes a fused skip norm return its residual sum (a 4th output, named) when it
    does not: onnxruntime-genai's final norm keeps only the normalized output, and the
    last layer's output is that sum. The node is replaced by the same node with four
    outputs (ONNX Runtime computes the sum either way, so the values do not change)."""
    if len(node.outputs) > 3:
        if not node.outputs[3].name:
            node.outputs[3].name = f"{node.name or node.op_type}/residual_sum"
        return
    fused = ir.Node(
        node.domain, node.op_type, node.inputs, list(node.attributes.values()), num_outputs=4,
        name=node.name, metadata_props=dict(node.metadata_props),
    )  # fmt: skip
    replaced = dict(zip(node.outputs, fused.outputs, strict=False))
    for old, new in replaced.items():
        name, old.name = old.name, None
        ir.convenience.replace_all_uses_with(old, new)
        new.name, new.type, new.shape = name, old.type, old.shape
    graph.outputs[:] = [replaced.get(out, out) for out in graph.outputs]
    summed = fused.outputs[3]
    summed.name = f"{node.name or node.op_type}/residual_sum"
    # the sum has the residual's type (no shape inference: it fails on genai's files)
    summed.type, summed.shape = node.inputs[0].type, node.inputs[0].shape
    graph.insert_before(node, fused)
    graph.remove(node, safe=True)


def candidates_from_residuals(model_ir: ir.Model, stages: list[Stage]) -> dict[str, list[str]]:
    """The stages' values found by following the residual stream (see the module
    docstring); raises a ValueError saying what to do when the graph does not fit."""
    graph = model_ir.graph
    # the embedding lookup: a Gather of a constant table indexed by input_ids (maybe cast)
    start = None
    for node in graph:
        if node.op_type == "Gather" and _is_constant_table(node.inputs[0]):
            idx = node.inputs[1]
            src = idx.producer() if idx is not None else None
            while src is not None and src.op_type in ("Cast", "Reshape", "Unsqueeze", "Identity"):
                idx = src.inputs[0]
                src = idx.producer() if idx is not None else None
            if idx is not None and idx.name == contract.INPUT_IDS and idx.producer() is None:
                start = node.outputs[0]
                break
    if start is None:
        raise ValueError(
            "localize_layer: the ONNX graph has no module-scope metadata and no embedding "
            "Gather on input_ids was found to follow the residual stream from; export with "
            "torch.onnx.export(..., dynamo=True) (diag.export_causal_lm) to keep the metadata."
        )
    chain: list[ir.Value] = []
    current = start
    for _ in range(10_000):
        for user in [u.node for u in current.uses()]:
            if _skip_norm_adding(user, current) and not _residual_sum_of(user, current):
                _expose_residual_sum(graph, user)  # replaces the node: read the users after
        users = [u.node for u in current.uses()]
        nxt = next(
            (
                n.outputs[0] if n.op_type == "Add" else n.outputs[3]
                for n in users
                if (n.op_type == "Add" and not any(_is_constant(i) for i in n.inputs))
                or _residual_sum_of(n, current)
            ),
            None,
        )
        if nxt is None:
            # a scaling of the embeddings (gemma) sits between the lookup and the stream
            if not chain and len(users) == 1 and users[0].op_type in ("Mul", "Cast", "Div"):
                current = users[0].outputs[0]
                continue
            break
        chain.append(nxt)
        current = nxt
    layer_stages = [s for s in stages if s.kind == "layer"]
    n = len(layer_stages)
    if len(chain) < 2 * n:
        raise ValueError(
            f"localize_layer: the ONNX graph has no module-scope metadata and its residual "
            f"stream has {len(chain)} residual additions, fewer than 2 per decoder layer "
            f"({2 * n}); this architecture needs the metadata of torch.onnx.export(dynamo=True)."
        )
    links = chain[-2 * n :]
    result: dict[str, list[str]] = {}
    emb = [s for s in stages if s.kind == "embedding"]
    if emb:
        result[emb[0].name] = [start.name]
    for st in layer_stages:
        result[st.name] = [links[2 * st.layer + 1].name]
    norm = [s for s in stages if s.kind == "norm"]
    if norm:
        # the final norm's output is what the lm_head matrix product reads; a tied
        # lm_head may be a Gemm between two Reshapes (see diag.export.make.weight_transpose)
        head = _before_pass_through(graph.outputs[0]).producer()
        if head is not None and head.op_type in ("MatMul", "Gemm"):
            normed = _before_pass_through(head.inputs[0])
            kept = normed.producer()
            if kept is not None and kept.op_type == "Gather" and kept.inputs[1].name == contract.LOGITS_TO_KEEP:
                # the positions whose logits are kept, gathered after the norm
                normed = _before_pass_through(kept.inputs[0])
            result[norm[0].name] = [normed.name]
    return result


def logits_name(model_ir: ir.Model) -> str:
    """The contract's logits output, or the first output of a graph that has none."""
    names = [o.name for o in model_ir.graph.outputs]
    return contract.LOGITS if contract.LOGITS in names else names[0]


def session_with_outputs(
    model_ir: ir.Model, names: list[str], providers: Providers = None
) -> ort.InferenceSession:
    """A session over ``model_ir`` with the values ``names`` as extra outputs, at the
    basic optimisation level (fusions would remove the intermediate values).

    ``model_ir`` is modified (the caller passes a model it owns, see
    :func:`load_model`). A value the graph has no type for gets one from ONNX shape
    inference, else the logits' type."""
    graph = model_ir.graph
    values = {v.name: v for node in graph for v in node.outputs}
    values.update({v.name: v for v in graph.inputs})
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"localize_layer: no value named {missing} in the ONNX graph.")
    if any(values[n].dtype is None for n in names):
        ShapeInferencePass()(model_ir)
    logits_type = graph.outputs[0].type
    existing = {o.name for o in graph.outputs}
    for name in names:
        if name in existing:
            continue
        value = values[name]
        if value.type is None:
            value.type = logits_type
        # the shapes stored may be stale after rewriting; ORT only needs the type
        value.shape = None
        graph.outputs.append(value)
        existing.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return make_session(model_ir, providers, session_options=opts)


__all__ = [
    "candidates_from_residuals",
    "candidates_from_scopes",
    "load_model",
    "logits_name",
    "node_scopes",
    "session_with_outputs",
]
