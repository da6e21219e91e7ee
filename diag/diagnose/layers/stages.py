"""The stages :func:`~diag.diagnose.layers.localize_layer` compares, read from the torch
model: the embedding module, each decoder layer, the final norm, the logits.

>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
...                   num_attention_heads=2, num_key_value_heads=2, vocab_size=50)
>>> [(s.name, s.kind, s.layer) for s in model_stages(LlamaForCausalLM(cfg))][:2]
[('model.embed_tokens', 'embedding', None), ('model.layers.0', 'layer', 0)]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


__all__ = ["Stage", "model_stages"]
