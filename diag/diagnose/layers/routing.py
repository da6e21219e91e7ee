"""Whether the router of a mixture-of-experts layer chose other experts in ONNX than
in torch, for :func:`~diag.diagnose.layers.localize_layer`.

A router scores every expert for each token and keeps the ``top_k`` best. When two
experts score almost the same, the rounding of the layers before can swap them: the
token then goes through another expert and the layer's output changes by a whole
expert's contribution, which no tolerance on the hidden states explains. For each MoE
layer, the router's logits are read on both sides (a forward hook on the router
module in torch, the first value of the router's module scope with the same shape in
ONNX), the ``top_k`` experts of each token are taken from them on each side (softmax
keeps the order of the logits), and each token whose two sets differ is a
:class:`RoutingFlip`, with each side's *router margin*: the gap between the logits of
its last chosen expert and of the best expert it left out (a near tie when small).

The routers read are those whose choice is the top-k of their logits (qwen2_moe,
qwen3_moe, olmoe, gpt_oss, granitemoe); phimoe's sparsemixer chooses otherwise, and
its layers are left out (:func:`router_modules`).

Example::

    >>> flip = RoutingFlip(layer=1, token=3, torch_experts=(0, 2), onnx_experts=(0, 1),
    ...                    torch_margin=0.01, onnx_margin=0.02)
    >>> print(flip)
    layer 1, token 3: torch chose experts (0, 2) (router margin 0.01), onnx (0, 1) (router margin 0.02)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from onnx_ir import Model as IrModel

from diag.diagnose.layers.onnx_intermediates import node_scopes
from diag.diagnose.layers.stages import Stage

#: the names a mixture-of-experts block gives its router, and the routers that do not
#: choose the top-k of their logits (phimoe's sparsemixer)
ROUTER_NAMES = ("gate", "router")
NOT_TOP_K = ("Phimoe",)


@dataclass
class RoutingFlip:
    """One token routed to other experts in ONNX than in torch."""

    layer: int
    #: the token's index in the flattened ``batch x sequence`` input
    token: int
    torch_experts: tuple[int, ...]
    onnx_experts: tuple[int, ...]
    torch_margin: float
    onnx_margin: float

    def __str__(self) -> str:
        return (
            f"layer {self.layer}, token {self.token}: torch chose experts {self.torch_experts} "
            f"(router margin {self.torch_margin:.3g}), onnx {self.onnx_experts} "
            f"(router margin {self.onnx_margin:.3g})"
        )


def router_modules(model: torch.nn.Module, stages: list[Stage]) -> dict[int, tuple[str, int]]:
    """Decoder layer -> (qualified name of its router, top_k), for the layers with a
    mixture-of-experts block whose router keeps the top-k of its logits."""
    config = getattr(model, "config", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    if not top_k:
        return {}
    routers = {}
    for stage in stages:
        if stage.kind != "layer" or stage.module is None:
            continue
        for name, module in stage.module.named_modules():
            parent, _, leaf = name.rpartition(".")
            block = stage.module.get_submodule(parent) if parent else stage.module
            if leaf in ROUTER_NAMES and hasattr(block, "experts"):
                if not type(module).__name__.startswith(NOT_TOP_K):
                    routers[stage.layer] = (f"{stage.name}.{name}", int(top_k))
                break
    return routers


def router_candidates(
    model_ir: IrModel, routers: dict[int, tuple[str, int]]
) -> dict[str, list[str]]:
    """Router name -> the values computed in its module scope, in graph order."""
    found: dict[str, list[str]] = {name: [] for name, _ in routers.values()}
    for node in model_ir.graph:
        scopes = node_scopes(node) or []
        for name in found:
            if any(s == name or s.endswith("." + name) for s in scopes):
                found[name].extend(v.name for v in node.outputs if v.name)
    return found


def _top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best columns (sorted) and the gap between the k-th best and
    the (k+1)-th best value."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranked = np.take_along_axis(logits, order, axis=-1)
    margin = (
        ranked[:, k - 1] - ranked[:, k] if logits.shape[-1] > k else np.full(len(logits), np.inf)
    )
    return np.sort(order[:, :k], axis=-1), margin


def routing_flips(
    layer: int, top_k: int, torch_logits: np.ndarray, onnx_logits: np.ndarray
) -> list[RoutingFlip]:
    """The tokens whose ``top_k`` experts differ between the two sides' router logits
    (``[tokens, experts]``).

    >>> t = np.array([[3.0, 1.0, 0.9], [2.0, 0.0, 1.0]])
    >>> o = np.array([[3.0, 0.9, 1.0], [2.0, 0.0, 1.0]])
    >>> [(f.token, f.torch_experts, f.onnx_experts) for f in routing_flips(0, 2, t, o)]
    [(0, (0, 1), (0, 2))]
    """
    ours, our_margin = _top_k(torch_logits.reshape(-1, torch_logits.shape[-1]), top_k)
    theirs, their_margin = _top_k(onnx_logits.reshape(-1, onnx_logits.shape[-1]), top_k)
    return [
        RoutingFlip(
            layer=layer,
            token=int(token),
            torch_experts=tuple(int(e) for e in ours[token]),
            onnx_experts=tuple(int(e) for e in theirs[token]),
            torch_margin=float(our_margin[token]),
            onnx_margin=float(their_margin[token]),
        )
        for token in np.nonzero((ours != theirs).any(axis=-1))[0]
    ]


__all__ = ["RoutingFlip", "router_candidates", "router_modules", "routing_flips"]
