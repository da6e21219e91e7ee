"""Patches of mixture-of-experts routers whose traced graph can lose the expert they chose.

``phimoe_router_keeps_its_choice``: phimoe's router (``sparsemixer``) picks the expert
of the highest score, then masks every expert whose score lies further than
``2 * jitter_eps`` (relative) below it, the chosen one included when its own distance
comes out above that bound; the softmax over what is left gives the routing weight.
It does the same for the second expert with the first one scattered to ``-inf``. The
chosen expert passes the mask only because ``max - score`` is exactly zero for it:
torch computes both sides from one rounded tensor. ONNX Runtime's CPU provider runs a
float16 ``Gemm`` or ``Sub`` in float32 between inserted casts and drops a
float32 -> float16 -> float32 round trip as precision-free: the ``Sub`` then reads the
router's unrounded float32 logits while the ``ReduceMax`` reads their float16 rounding,
the chosen expert's distance is a few float16 ulps instead of zero, and with
``jitter_eps = 0`` it is masked with the others: a softmax over ``-inf`` only, NaN
routing weights, NaN logits, token 0 at every step.

The replacement computes the same mask and unmasks the chosen expert by its index (a
``ScatterElements`` of ``False``), which no rounding can move: in exact arithmetic its
distance is zero and never above ``2 * jitter_eps >= 0``, so the routing is unchanged
wherever the original's is defined. Training (random expert draws, a custom backward)
is left to the original.

Example::

    >>> [p.name for p in ROUTER_PATCHES]
    ['phimoe_router_keeps_its_choice']
"""

from __future__ import annotations

from typing import Any

import torch

from diag.compat.transformers_api import parameter_names
from diag.export.make.patches.patch import Patch

#: the parameters of phimoe's ``sparsemixer`` the replacement takes (4.57 and 5.x)
SPARSEMIXER_PARAMETERS = ["scores", "jitter_eps", "training", "top_k"]


def _sparsemixer_fits(original: Any) -> str | None:
    names = parameter_names(original)
    if names != SPARSEMIXER_PARAMETERS:
        return f"sparsemixer takes ({', '.join(names)}) in this release"
    return None


def _pick(
    candidates: torch.Tensor, scores: torch.Tensor, jitter_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The expert of the highest ``candidates`` score and its weight: the softmax over
    the candidates within ``2 * jitter_eps`` of it (relative to ``|scores|``), the
    chosen one kept by its index."""
    with torch.no_grad():
        best, chosen = candidates.max(dim=-1, keepdim=True)
        scale = scores.abs().clamp(min=best)
        far = ((best - scores) / scale) > (2 * jitter_eps)
        far = far.scatter(-1, chosen, False)
    gates = torch.softmax(candidates.masked_fill(far, float("-inf")), dim=-1)
    return gates.gather(dim=-1, index=chosen), chosen


def _router_keeps_its_choice(original: Any) -> Any:
    def sparsemixer(
        scores: torch.Tensor, jitter_eps: float, training: bool, top_k: int = 2
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if training:
            return original(scores, jitter_eps, training, top_k)
        first_weight, first = _pick(scores, scores, jitter_eps)
        # like the original, two experts whatever top_k says (phimoe's configs say 2)
        second_weight, second = _pick(scores.scatter(-1, first, float("-inf")), scores, jitter_eps)
        return torch.cat([first_weight, second_weight], dim=-1), torch.cat([first, second], dim=-1)

    return sparsemixer


ROUTER_PATCHES: list[Patch] = [
    Patch(
        name="phimoe_router_keeps_its_choice",
        target="transformers.models.phimoe.modeling_phimoe:sparsemixer",
        factory=_router_keeps_its_choice,
        check=_sparsemixer_fits,
        why=(
            "phimoe's router keeps its chosen expert because max - score is exactly 0 "
            "there; ONNX Runtime's CPU provider computes a float16 export's Sub from the "
            "unrounded float32 logits, the chosen expert is masked too and the routing "
            "weights are NaN; the chosen expert is unmasked by its index instead"
        ),
        kind="transformers",
        imported_only=True,
    ),
]
