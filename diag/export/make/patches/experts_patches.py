"""Patches of transformers' mixture-of-experts blocks, applied while exporting.

``experts_gathered`` (5.x): the routed experts of a block run through the
implementation the config names (:func:`diag.compat.moe_blocks.experts_interface`),
``grouped_mm`` by default: a sort of the token/expert pairs and the custom op
``transformers::grouped_mm_fallback``, which the ONNX exporter cannot translate
(``eager`` loops over the experts the batch hits, which a trace cannot follow). The
patch makes the interface answer ``batched_mm`` whatever the config says: each
(token, chosen expert) pair gathers its expert's weights and multiplies by them
(``Gather`` + ``MatMul`` in the graph), so a step computes ``tokens x top_k`` experts'
work whatever the number of experts. The router of each family (softmax or sigmoid,
top-k, renormalisation, gpt-oss's biased router and clamped SwiGLU, the shared experts
and their gates) is traced as transformers wrote it; only where the chosen experts'
products are computed changes, and the sum over them is the same reshape-and-sum. A
prompt gathers one copy of the chosen weights per token: prefill memory grows with
``tokens x top_k x expert size``.

``experts_dense.<family>`` (4.57, :data:`diag.compat.moe_blocks.LOOPED_EXPERT_BLOCKS`):
the block loops over its experts with ``torch.where`` on the routing, which a trace
cannot follow (or bakes in the experts the example hit). The replacement routes as
the original (softmax in float32, top-k, renormalised when the config says so), runs
every expert on every token and weights it by its routing weight, zero for the experts
a token did not choose: the same sum in the same expert order, ``num_experts / top_k``
times the experts' work. The shared expert and its sigmoid gate are added as the
original adds them.

Example::

    >>> [p.name for p in EXPERTS_PATCHES][0]
    'experts_gathered'
"""

from __future__ import annotations

from typing import Any

import torch

from diag.compat.moe_blocks import LOOPED_EXPERT_BLOCKS, experts_interface
from diag.compat.transformers_api import parameter_names
from diag.export.make.patches.patch import Patch

#: the experts implementation of transformers 5 that a trace can follow
EXPORTABLE_EXPERTS = "batched_mm"


def _experts_interface_fits(original: Any) -> str | None:
    interface = experts_interface()
    if interface is None or EXPORTABLE_EXPERTS not in interface:
        return f"transformers' experts interface has no {EXPORTABLE_EXPERTS!r} in this release"
    names = parameter_names(original)
    if names != ["experts_implementation", "default"]:
        return f"ExpertsInterface.get_interface takes ({', '.join(names)}) in this release"
    return None


def _experts_gathered(original: Any) -> Any:
    def get_interface(self: Any, experts_implementation: str, default: Any) -> Any:
        return original(self, EXPORTABLE_EXPERTS, default)

    return get_interface


def _looped_block_fits(original: Any) -> str | None:
    if experts_interface() is not None:
        return "the experts run through transformers' experts interface (experts_gathered)"
    if parameter_names(original) != ["hidden_states"]:
        return f"the block's forward takes ({', '.join(parameter_names(original))})"
    return None


def dense_experts_forward(
    self: Any, hidden_states: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward of a 4.57 sparse block (``gate``, ``experts``, ``top_k``,
    ``norm_topk_prob``, optional ``shared_expert`` and ``shared_expert_gate``) with every
    expert run on every token, weighted by its routing weight (zero when not chosen)."""
    batch, length, hidden = hidden_states.shape
    flat = hidden_states.view(-1, hidden)
    router_logits = self.gate(flat)
    weights = torch.nn.functional.softmax(router_logits, dim=1, dtype=torch.float)
    weights, chosen = torch.topk(weights, self.top_k, dim=-1)
    if self.norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    weights = weights.to(flat.dtype)
    dense = torch.zeros_like(router_logits, dtype=flat.dtype).scatter(1, chosen, weights)
    # expert by expert in index order, as the original's index_add_ sums them
    out = torch.zeros_like(flat)
    for index, expert in enumerate(self.experts):
        out = out + expert(flat) * dense[:, index, None]
    shared = getattr(self, "shared_expert", None)
    if shared is not None:
        out = out + torch.sigmoid(self.shared_expert_gate(flat)) * shared(flat)
    return out.reshape(batch, length, hidden), router_logits


EXPERTS_PATCHES: list[Patch] = [
    Patch(
        name="experts_gathered",
        target="transformers.integrations.moe:ExpertsInterface.get_interface",
        factory=_experts_gathered,
        check=_experts_interface_fits,
        why=(
            "the default experts implementation (grouped_mm) calls the custom op "
            "transformers::grouped_mm_fallback, which the ONNX exporter cannot translate, "
            "and eager loops over the experts the batch hit; batched_mm gathers the chosen "
            "experts' weights per token (top_k experts' work per token)"
        ),
        kind="transformers",
    ),
]

EXPERTS_PATCHES += [
    Patch(
        name=f"experts_dense.{family}",
        target=f"{block}.forward",
        factory=lambda original: dense_experts_forward,
        check=_looped_block_fits,
        why=(
            "the block loops over the experts chosen by the routing (torch.where), which a "
            "trace cannot follow or bakes in; every expert weighted by its routing weight "
            "(zero when not chosen) computes the same sum"
        ),
        kind="transformers",
    )
    for family, block in LOOPED_EXPERT_BLOCKS.items()
]
