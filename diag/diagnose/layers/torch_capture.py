"""The torch side of :func:`~diag.diagnose.layers.localize_layer`: forward hooks on the
stage modules record their outputs during one forward pass.

>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from diag.diagnose.layers.stages import model_stages
>>> cfg = LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
...                   num_attention_heads=2, num_key_value_heads=2, vocab_size=20)
>>> model = LlamaForCausalLM(cfg).eval()
>>> ids = torch.tensor([[1, 2, 3]])
>>> feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
...          "position_ids": torch.arange(3)[None]}
>>> {k: tuple(v.shape) for k, v in run_torch(model, model_stages(model), feeds).items()}
{'model.embed_tokens': (1, 3, 16), 'model.layers.0': (1, 3, 16), 'model.norm': (1, 3, 16), 'logits': (1, 3, 20)}
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from diag.compat.transformers_api import cache_input, cache_input_name
from diag.diagnose.layers.stages import Stage


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


def run_torch(
    model: torch.nn.Module, stages: list[Stage], feeds: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """One forward pass of ``model`` on ``feeds``: the output of every stage module
    (float32, on the CPU) by stage name, and the logits under ``"logits"``. A cache
    in ``feeds`` is copied first (the model appends to the one it is given)."""
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


__all__ = ["run_torch"]
