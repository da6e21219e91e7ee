"""Which decoder layer makes an exported model differ from torch.

:func:`localize_layer` runs one input through the torch model and through the ONNX
model and compares, stage by stage, the embeddings, the output of every decoder layer,
the final norm and the logits. The first stage whose difference exceeds the tolerance
is the culprit: an export bug (a wrong weight, a broken attention mask, a bad
rewriting) shows up in the first layer that computes it and spreads to every later one.

How the ONNX values are found
-----------------------------

On the torch side, forward hooks on the modules record their outputs (the embedding
module, each ``model.model.layers[i]``, the final norm).

On the ONNX side the same values must be exposed as extra graph outputs, so one has to
know which value of the graph is the output of decoder layer ``i``. Re-exporting the
model with ``output_hidden_states=True`` would not do: it diagnoses a new file, not the
one the user has (a corrupted weight in the user's file would be gone). The file is
read as it is, and two methods find the values:

1. **Module scopes** (preferred). The dynamo exporter of ``torch.onnx`` stores on every
   node the stack of modules it was traced in (metadata ``pkg.torch.onnx.name_scopes``,
   e.g. ``['', 'model', 'model.model', 'model.model.layers.2', 'add_1046']``, or the
   older ``namespace`` string). The nodes of module ``model.layers.2`` are those whose
   scope ends with that qualified name (an export wrapper may add a prefix); the
   module's outputs are the values these nodes produce and some node outside the
   module (or the graph output) consumes. Among them, the one whose shape at run time
   equals the torch output's shape is the match (the key/value ``present`` tensors
   the layer also produces have another shape); if several do, the last produced.
   This survives the exporter's own optimisation (constant folding, transposed
   weights renamed ``val_*``) because rewritten nodes inherit the metadata.
2. **Residual stream** (fallback, for graphs without the metadata: other exporters,
   tools that drop metadata). Every pre-norm decoder (llama, mistral, qwen, phi3,
   gemma, gpt2...) adds two residual branches per layer, so the hidden states follow
   a chain of ``Add`` nodes whose both inputs are computed values: starting from the
   embedding ``Gather``, each element of the chain is consumed by the next residual
   ``Add``. The last ``2 * num_layers`` links of the chain are the residual sums;
   layer ``i``'s output is link ``2 * i + 1``. Parallel-attention architectures (one
   residual sum per layer) do not fit and raise a clear error.

Tolerance
---------

Each stage gets a ``scaled_diff``: at every position (token), the max absolute
difference divided by ``max(1, RMS)`` of torch's vector at that position
(:func:`scaled_difference`); the stage agrees when it is at most ``tol``. Hidden
states of real models have *massive activations* (SmolLM2: ~25,000 on one channel of
the first token, ~10 elsewhere); their float32 rounding (~0.02 there) would trip an
absolute tolerance on every healthy layer, while a tolerance relative to the whole
tensor's maximum would hide real errors on the ordinary tokens.

ONNX Runtime runs the model with those extra outputs at the basic optimisation level,
so no fusion hides a value (the numbers are those of the unfused graph).

Example::

    >>> report = localize_layer(model, "model.onnx", {"input_ids": ids})  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    first stage beyond tol=0.0001: model.layers.1 (max abs diff 0.31, scaled 0.08)
"""

from __future__ import annotations

import ast
import copy
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch

from diag import contract
from diag.compat.transformers_api import cache_input, cache_input_name, require_cache_argument
from diag.helpers.dtypes import onnx_dtype_to_numpy_dtype

_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_NAMESPACE = "namespace"


@dataclass
class Stage:
    """One compared point of the forward pass: a module of the torch model."""

    #: qualified module name relative to the causal LM, e.g. ``model.layers.3``
    name: str
    #: ``embedding``, ``layer``, ``norm`` or ``logits``
    kind: str
    #: decoder layer index for kind ``layer``, else None
    layer: int | None
    module: torch.nn.Module | None = None


@dataclass
class LayerLocalization:
    """Result of :func:`localize_layer`.

    ``table`` has one row per stage (``stage``, ``kind``, ``layer``, ``onnx_name``,
    ``shape``, ``max_abs_diff``, ``scaled_diff`` (see :func:`scaled_difference`),
    ``ok``); ``culprit`` is the name of
    the first stage beyond the tolerance (None when every stage agrees) and
    ``culprit_layer`` its decoder-layer index (None for other stages).
    """

    table: pd.DataFrame
    culprit: str | None
    culprit_layer: int | None
    tol: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        """True when every stage is within the tolerance."""
        return self.culprit is None

    def __str__(self) -> str:
        if self.culprit is None:
            worst = float(self.table["max_abs_diff"].max()) if len(self.table) else 0.0
            compared = int(self.table["ok"].notna().sum()) if len(self.table) else 0
            head = f"all {compared} stages agree within tol={self.tol:g} (max abs diff {worst:.3g})"
        else:
            row = self.table[self.table["stage"] == self.culprit].iloc[0]
            head = (
                f"first stage beyond tol={self.tol:g}: {self.culprit} "
                f"(max abs diff {row['max_abs_diff']:.3g}, scaled {row['scaled_diff']:.3g})"
            )
        cols = ["stage", "onnx_name", "max_abs_diff", "scaled_diff", "ok"]
        text = f"{head}\n{self.table[cols].to_string(index=False)}"
        unmatched = self.details.get("unmatched")
        if unmatched:
            text += f"\nnot found in the ONNX graph (not compared): {', '.join(unmatched)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "culprit": self.culprit,
            "culprit_layer": self.culprit_layer,
            "tol": self.tol,
            "method": self.method,
            "table": self.table.to_dict(orient="records"),
        }


def scaled_difference(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """``(max |got - expected|, scaled difference)`` of two ``[..., hidden]`` tensors.

    The scaled difference is, over every position (every vector along the last
    dimension), ``max |got - expected|`` divided by ``max(1, RMS(expected))`` of that
    position. Hidden states have very different magnitudes from one token to another
    (SmolLM2 has *massive activations* of ~25,000 on its first token while the others
    stay near 10), and float32 rounding grows with the magnitude: a plain absolute
    tolerance flags healthy layers, a tolerance relative to the largest value of the
    whole tensor hides real errors on the ordinary tokens. Non-finite values give
    ``inf``.

    >>> e = torch.tensor([[[3.0, 4.0], [0.1, 0.0]]])  # RMS 3.54 and 0.07
    >>> d = scaled_difference(e, e + torch.tensor([[[0.0, 0.354], [0.01, 0.0]]]))
    >>> [round(x, 3) for x in d]  # the first position decides: 0.354 / 3.54
    [0.354, 0.1]
    """
    if expected.numel() == 0:
        return 0.0, 0.0
    if not bool(torch.isfinite(got).all()):
        return float("inf"), float("inf")
    diff = (got.float() - expected.float()).abs()
    rms = expected.float().pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1.0)
    return float(diff.max()), float((diff / rms).max())


# -- torch side ----------------------------------------------------------------------------


def _decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """Finds the ModuleList of decoder layers (``model.layers``, gpt2's ``transformer.h``)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    n_layers = None
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        n_layers = getattr(config, attr, None) if config is not None else None
        if n_layers is not None:
            break
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.ModuleList)
        and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")
        and (n_layers is None or len(mod) == n_layers)
    ]
    if not candidates:
        raise ValueError(
            f"localize_layer cannot find the decoder layers of {type(model).__name__}: it looks "
            "for a ModuleList named 'layers', 'h' or 'blocks' with config.num_hidden_layers "
            "entries (as in transformers' causal LMs)."
        )
    # the shortest name is the decoder's own list (not a nested vision tower's)
    return min(candidates, key=lambda c: len(c[0]))


def _final_norm(model: torch.nn.Module, layers_name: str) -> tuple[str, torch.nn.Module] | None:
    parent = layers_name.rsplit(".", 1)[0] if "." in layers_name else ""
    modules = dict(model.named_modules())
    for attr in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        name = f"{parent}.{attr}" if parent else attr
        if name in modules:
            return name, modules[name]
    return None


def model_stages(model: torch.nn.Module) -> list[Stage]:
    """The compared stages of a causal LM, in execution order: embedding, each decoder
    layer, the final norm (when found) and the logits.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
    ...                   num_attention_heads=2, num_key_value_heads=2, vocab_size=50)
    >>> [s.name for s in model_stages(LlamaForCausalLM(cfg))]
    ['model.embed_tokens', 'model.layers.0', 'model.layers.1', 'model.norm', 'logits']
    """
    stages: list[Stage] = []
    modules = {id(m): n for n, m in model.named_modules()}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and id(emb) in modules:
        stages.append(Stage(modules[id(emb)], "embedding", None, emb))
    layers_name, layers = _decoder_layers(model)
    for i, layer in enumerate(layers):
        stages.append(Stage(f"{layers_name}.{i}", "layer", i, layer))
    norm = _final_norm(model, layers_name)
    if norm is not None:
        stages.append(Stage(norm[0], "norm", None, norm[1]))
    stages.append(Stage("logits", "logits", None, None))
    return stages


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    raise TypeError(
        f"cannot read a hidden-state tensor from a module output of type {type(output)}"
    )


def _run_torch(
    model: torch.nn.Module, stages: list[Stage], feeds: dict[str, Any]
) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(_mod, _args, output):
            # a module may be called more than once (tied modules): keep the first call
            captured.setdefault(name, _first_tensor(output).detach().float().cpu())

        return hook

    for st in stages:
        if st.module is not None:
            handles.append(st.module.register_forward_hook(hook_for(st.name)))
    try:
        kwargs = dict(feeds)
        if cache_input(kwargs) is not None:
            # the model appends to the cache it is given: keep the caller's intact
            name = cache_input_name(kwargs)
            kwargs[name] = copy.deepcopy(kwargs[name])
        with torch.no_grad():
            out = model(**kwargs)
    finally:
        for h in handles:
            h.remove()
    captured["logits"] = out.logits.detach().float().cpu()
    return captured


# -- inputs ----------------------------------------------------------------------------------


def _normalize_inputs(inputs: Any, model: torch.nn.Module) -> dict[str, Any]:
    if isinstance(inputs, torch.Tensor):
        inputs = {"input_ids": inputs}
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        raise TypeError(
            "localize_layer expects `inputs` as a dict with at least 'input_ids' (and optionally "
            "'attention_mask', 'position_ids' and the cache: 'cache' or 'past_key_values'), "
            "or an input_ids tensor; got "
            f"{type(inputs).__name__}."
        )
    ids = inputs["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError("inputs['input_ids'] must be a 2D int64 tensor [batch, seq].")
    feeds: dict[str, Any] = {"input_ids": ids.to(torch.int64)}
    past = cache_input(inputs)
    past_len = 0
    if past is not None:
        # imported here, as below: cache_helper imports transformers, which
        # `import diag.diagnose` skips
        from diag.helpers.cache_helper import cache_to_list, is_cache, make_dynamic_cache

        if not is_cache(past):
            past = make_dynamic_cache(list(past))
        past_len = cache_to_list(past)[0][0].shape[2] if cache_to_list(past) else 0
        # under the name the model's forward takes, whichever the caller used
        feeds[require_cache_argument(model, "localize_layer")] = past
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones(ids.shape[0], past_len + ids.shape[1], dtype=torch.int64)
    feeds["attention_mask"] = mask.to(torch.int64)
    pos = inputs.get("position_ids")
    if pos is None:
        # left padding: a row's first real token is position 0
        pos = (feeds["attention_mask"].cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
    feeds["position_ids"] = pos.to(torch.int64)
    return feeds


def _onnx_feeds(
    proto: onnx.ModelProto, feeds: dict[str, Any], model: torch.nn.Module
) -> dict[str, np.ndarray]:
    from diag.helpers.cache_helper import cache_to_list
    from diag.models.cache_layout import cache_layout

    graph_inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    ids = feeds["input_ids"]
    batch = ids.shape[0]
    past = cache_input(feeds)
    pairs = cache_to_list(past) if past is not None else []
    if not pairs:
        # no past: the prefill's empty past, of the shapes of the model's own cache
        pairs = cache_layout(model).random_pairs(batch, 0)
    flat_past = [t for kv in pairs for t in kv]
    out: dict[str, np.ndarray] = {}
    k = 0
    for inp in graph_inputs:
        name = inp.name
        elem = onnx_dtype_to_numpy_dtype(inp.type.tensor_type.elem_type)
        if name in (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.POSITION_IDS):
            out[name] = feeds[name].numpy().astype(elem)
            continue
        # the cache inputs, in contract order: key 0, value 0, key 1, ...
        if k >= len(flat_past):
            raise ValueError(
                f"the ONNX model has more cache inputs ({name!r}...) than the {len(flat_past)} "
                f"key/value tensors of {type(model).__name__}'s cache: was it exported from "
                "this model?"
            )
        out[name] = flat_past[k].detach().float().numpy().astype(elem)
        k += 1
    return out


# -- onnx side -------------------------------------------------------------------------------


def _node_scopes(node: onnx.NodeProto) -> list[str] | None:
    props = {p.key: p.value for p in node.metadata_props}
    if _NAME_SCOPES in props:
        try:
            scopes = ast.literal_eval(props[_NAME_SCOPES])
            return [str(s) for s in scopes]
        except (ValueError, SyntaxError):
            pass
    if _NAMESPACE in props:
        # "name: Class/name.sub: Class/op: target" -> module names
        return [part.split(":", 1)[0].strip() for part in props[_NAMESPACE].split("/")]
    return None


def _in_scope(scopes: list[str], qualname: str) -> bool:
    return any(s == qualname or s.endswith("." + qualname) for s in scopes)


def _candidates_from_scopes(
    proto: onnx.ModelProto, stages: list[Stage]
) -> dict[str, list[str]] | None:
    nodes = list(proto.graph.node)
    scopes = [_node_scopes(n) for n in nodes]
    if not any(s for s in scopes):
        return None
    graph_outputs = {o.name for o in proto.graph.output}
    consumers: dict[str, list[int]] = {}
    for idx, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(idx)
    result: dict[str, list[str]] = {}
    for st in stages:
        if st.kind == "logits":
            continue
        inside = {i for i, s in enumerate(scopes) if s and _in_scope(s, st.name)}
        cands = []
        for i in sorted(inside):
            for name in nodes[i].output:
                if not name:
                    continue
                if name in graph_outputs or any(c not in inside for c in consumers.get(name, [])):
                    cands.append(name)
        if cands:
            result[st.name] = cands
    return result


def _candidates_from_residuals(proto: onnx.ModelProto, stages: list[Stage]) -> dict[str, list[str]]:
    consts = {t.name for t in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    producers = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    input_names = {contract.INPUT_IDS}
    # the embedding lookup: a Gather of a constant table indexed by input_ids (maybe cast)
    start = None
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.input[0] in consts:
            idx = node.input[1]
            src = producers.get(idx)
            while src is not None and src.op_type in ("Cast", "Reshape", "Unsqueeze", "Identity"):
                idx = src.input[0]
                src = producers.get(idx)
            if idx in input_names:
                start = node.output[0]
                break
    if start is None:
        raise ValueError(
            "localize_layer: the ONNX graph has no module-scope metadata and no embedding "
            "Gather on input_ids was found to follow the residual stream from; export with "
            "torch.onnx.export(..., dynamo=True) (diag.export_causal_lm) to keep the metadata."
        )
    chain: list[str] = []
    current = start
    for _ in range(10_000):
        nxt = None
        for node in consumers.get(current, []):
            if node.op_type == "Add" and all(i not in consts for i in node.input):
                nxt = node.output[0]
                break
        if nxt is None:
            # a scaling of the embeddings (gemma) sits between the lookup and the stream
            single = consumers.get(current, [])
            if not chain and len(single) == 1 and single[0].op_type in ("Mul", "Cast", "Div"):
                current = single[0].output[0]
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
        result[emb[0].name] = [start]
    for st in layer_stages:
        result[st.name] = [links[2 * st.layer + 1]]
    norm = [s for s in stages if s.kind == "norm"]
    if norm:
        # the final norm's output is what the lm_head matrix product reads; a tied
        # lm_head may be a Gemm between two Reshapes (see diag.export.weight_transpose)
        def back(name: str) -> onnx.NodeProto | None:
            node = producers.get(name)
            while node is not None and node.op_type in ("Reshape", "Cast", "Identity"):
                node = producers.get(node.input[0])
            return node

        head = back(proto.graph.output[0].name)
        if head is not None and head.op_type in ("MatMul", "Gemm"):
            x = head.input[0]
            node = producers.get(x)
            while node is not None and node.op_type in ("Reshape", "Cast", "Identity"):
                x = node.input[0]
                node = producers.get(x)
            result[norm[0].name] = [x]
    return result


def _value_types(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    infos = {v.name: v for v in proto.graph.value_info}
    infos.update({v.name: v for v in proto.graph.output})
    return infos


def _session_with_outputs(proto: onnx.ModelProto, names: list[str], providers: list[str] | None):
    import onnxruntime as ort

    # ``proto`` is modified: the caller passes a copy it owns
    infos = _value_types(proto)
    missing = [n for n in names if n not in infos]
    if missing:
        inferred = onnx.shape_inference.infer_shapes(proto)
        infos.update({v.name: v for v in inferred.graph.value_info})
    existing = {o.name for o in proto.graph.output}
    logits_type = proto.graph.output[0].type.tensor_type.elem_type
    for name in names:
        if name in existing:
            continue
        if name in infos and infos[name].type.HasField("tensor_type"):
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(infos[name])
            # the shapes stored may be stale after rewriting; ORT only needs the type
            vi.type.tensor_type.ClearField("shape")
        else:
            vi = onnx.helper.make_tensor_value_info(name, logits_type, None)
        proto.graph.output.append(vi)
        existing.add(name)
    opts = ort.SessionOptions()
    # fusions would remove the intermediate values we want to see
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    providers = providers or ["CPUExecutionProvider"]
    if proto.ByteSize() < 1_800_000_000:
        return ort.InferenceSession(proto.SerializeToString(), opts, providers=providers)
    # over protobuf's 2 GB limit: go through a file with external data
    with tempfile.TemporaryDirectory(prefix="diag_localize_", ignore_cleanup_errors=True) as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(proto, path, save_as_external_data=True, location="model.onnx.data")
        # the session reads the weights at creation: the files can go afterwards
        return ort.InferenceSession(path, opts, providers=providers)


def _load_proto(onnx_model: Any) -> onnx.ModelProto:
    """Returns a ModelProto this module may modify (a copy when given one)."""
    if isinstance(onnx_model, onnx.ModelProto):
        owned = onnx.ModelProto()
        owned.CopyFrom(onnx_model)
        return owned
    if isinstance(onnx_model, (str, os.PathLike)):
        if not os.path.exists(onnx_model):
            raise FileNotFoundError(f"localize_layer: no ONNX file at {os.fspath(onnx_model)!r}.")
        return onnx.load(os.fspath(onnx_model))
    raise TypeError(
        "localize_layer needs the ONNX model itself (a path or an onnx.ModelProto) to expose "
        f"intermediate values as outputs; got {type(onnx_model).__name__}. An InferenceSession "
        "cannot be modified: pass the file it was created from."
    )


def localize_layer(
    model: torch.nn.Module,
    onnx_model_path: str | os.PathLike | onnx.ModelProto,
    inputs: dict[str, Any] | torch.Tensor,
    tol: float = 1e-4,
    *,
    providers: list[str] | None = None,
) -> LayerLocalization:
    """Names the first stage (embedding, decoder layer, final norm, logits) where the
    ONNX model and the torch model disagree on one input.

    :param model: the torch causal LM (a transformers ``*ForCausalLM``)
    :param onnx_model_path: its export (path or ``onnx.ModelProto``), following
        :mod:`diag.contract`, or a folder another tool wrote (its first graph is read)
    :param inputs: ``{"input_ids": ..., "attention_mask": ..., "position_ids": ...,
        "cache": ...}`` (only ``input_ids`` required; the cache under ``cache`` or
        ``past_key_values``, either name on any transformers release; a missing cache
        means an empty one, a missing mask means all ones, missing positions follow the
        mask) or an ``input_ids`` tensor
    :param tol: a stage agrees when its ``scaled_diff`` is at most ``tol``: at every
        position (token), ``max |onnx - torch|`` divided by ``max(1, RMS of torch's
        vector at that position)``, see :func:`scaled_difference`
    :param providers: ONNX Runtime providers (CPU by default)
    :return: a :class:`LayerLocalization` (``.table`` per stage, ``.culprit``)

    See the module docstring for how the ONNX values are matched to the modules.

    Example::

        report = localize_layer(model, "model.onnx", {"input_ids": ids}, tol=1e-4)
        report.culprit        # 'model.layers.1' or None
        report.table          # stage, onnx_name, max_abs_diff, ok...
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"localize_layer expects a torch model, got {type(model).__name__}.")
    if not tol > 0:
        raise ValueError(f"tol must be a positive float, got {tol!r}.")
    if isinstance(onnx_model_path, (str, os.PathLike)) and os.path.isdir(onnx_model_path):
        # a folder another tool wrote: its first graph (the prefill of a pair)
        from diag.contract.detect import find_model

        onnx_model_path = find_model(onnx_model_path).paths[0]
    proto = _load_proto(onnx_model_path)
    feeds = _normalize_inputs(inputs, model)
    stages = model_stages(model)

    method = "module scopes"
    cands = _candidates_from_scopes(proto, stages)
    missing = [
        s.name for s in stages if s.kind == "layer" and (cands is None or s.name not in cands)
    ]
    if cands is None or missing:
        method = "residual stream"
        cands = _candidates_from_residuals(proto, stages)

    expected = _run_torch(model, stages, feeds)
    logits_name = (
        contract.LOGITS
        if any(o.name == contract.LOGITS for o in proto.graph.output)
        else proto.graph.output[0].name
    )
    wanted = sorted({n for names in cands.values() for n in names} | {logits_name})
    ort_feeds = _onnx_feeds(proto, feeds, model)
    sess = _session_with_outputs(proto, wanted, providers)
    del proto  # the session holds its own copy of the weights
    values = dict(zip(wanted, sess.run(wanted, ort_feeds), strict=True))

    rows = []
    culprit: Stage | None = None
    for st in stages:
        ref = expected.get(st.name)
        names = [logits_name] if st.kind == "logits" else cands.get(st.name, [])
        if ref is None:
            continue
        shaped = [n for n in names if tuple(values[n].shape) == tuple(ref.shape)]
        if not shaped:
            rows.append(
                dict(stage=st.name, kind=st.kind, layer=st.layer, onnx_name=None,
                     shape=tuple(ref.shape), max_abs_diff=np.nan, scaled_diff=np.nan, ok=None)
            )  # fmt: skip
            continue
        name = shaped[-1]  # the last value a module produces is its output
        got = torch.from_numpy(np.asarray(values[name], dtype=np.float32))
        max_abs, scaled = scaled_difference(ref, got)
        ok = bool(scaled <= tol)
        rows.append(
            dict(stage=st.name, kind=st.kind, layer=st.layer, onnx_name=name,
                 shape=tuple(ref.shape), max_abs_diff=max_abs, scaled_diff=scaled, ok=ok)
        )  # fmt: skip
        if not ok and culprit is None:
            culprit = st
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    return LayerLocalization(
        table=table,
        culprit=culprit.name if culprit else None,
        culprit_layer=culprit.layer if culprit else None,
        tol=tol,
        method=method,
        details={"unmatched": [r["stage"] for r in rows if r["onnx_name"] is None]},
    )


__all__ = ["LayerLocalization", "Stage", "localize_layer", "model_stages"]
