"""How each transformers release runs the experts of a mixture-of-experts block, and
which blocks diag can export on it.

* 5.x: every supported family (qwen2_moe, qwen3_moe, olmoe, gpt_oss, granitemoe,
  phimoe) keeps its experts' weights as 3-D parameters and calls them through
  ``transformers.integrations.moe.ALL_EXPERTS_FUNCTIONS`` (the config's
  ``_experts_implementation``, ``grouped_mm`` by default): :func:`experts_interface`
  finds it, and the export patch ``experts_gathered`` picks ``batched_mm`` there.
* 4.57: no such interface; each family loops over its experts in its own forward
  (``torch.where`` / ``nonzero`` on the routing: a trace fails, or bakes in the
  experts the example tokens hit and answers wrong for others).
  :data:`LOOPED_EXPERT_BLOCKS` lists the blocks whose routing the export patch
  ``experts_dense`` rewrites (softmax, top-k, optional renormalisation, optional
  shared expert); :data:`UNEXPORTABLE_EXPERTS` the others, with why, which
  :func:`unexportable_experts` reports for a model.
* a float64 copy (the exact reference the float32 noise is measured against): 5.x's
  default ``grouped_mm`` calls ``torch._grouped_mm``, which has no float64 kernel;
  :func:`float64_copy` runs the copy's experts as :data:`FLOAT64_EXPERTS` (4.57's
  loops take any dtype).

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> unexportable_experts(get_untrained_model_with_inputs("llama")["model"]) is None
    True
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import torch

#: 4.57's blocks with a list of expert MLPs routed by softmax and top-k, by family
LOOPED_EXPERT_BLOCKS: dict[str, str] = {
    "qwen2_moe": "transformers.models.qwen2_moe.modeling_qwen2_moe:Qwen2MoeSparseMoeBlock",
    "qwen3_moe": "transformers.models.qwen3_moe.modeling_qwen3_moe:Qwen3MoeSparseMoeBlock",
    "olmoe": "transformers.models.olmoe.modeling_olmoe:OlmoeSparseMoeBlock",
}

#: 4.57's expert modules no patch of diag replaces: class name -> (family, what it does)
UNEXPORTABLE_EXPERTS: dict[str, tuple[str, str]] = {
    "GptOssExperts": (
        "gpt_oss",
        "on CPU it loops over the experts the batch hits (expert_hit = ...nonzero())",
    ),
    "GraniteMoeParallelExperts": (
        "granitemoe",
        "it splits the tokens by per-expert counts read as Python ints (expert_size.tolist())",
    ),
    "PhimoeSparseMoeBlock": (
        "phimoe",
        "it loops over the experts, skipping those no token chose (torch.where on the routing)",
    ),
}


#: transformers 5's experts implementations with no float64 kernel (torch._grouped_mm
#: takes float32, bfloat16 and float16 only)
NO_FLOAT64_EXPERTS = frozenset({"grouped_mm"})

#: the implementation a float64 copy runs its experts with: transformers' own loop
FLOAT64_EXPERTS = "eager"


def experts_interface() -> Any:
    """transformers' registry of experts implementations (5.x), or None (4.57).

    >>> experts_interface() is None or "batched_mm" in experts_interface()
    True
    """
    if importlib.util.find_spec("transformers.integrations.moe") is None:
        return None
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    return ALL_EXPERTS_FUNCTIONS


def unexportable_experts(model: Any) -> str | None:
    """Why the experts of ``model`` cannot be exported with the installed transformers,
    or None (no experts, or experts diag's patches handle).

    >>> import torch
    >>> unexportable_experts(torch.nn.Linear(2, 2)) is None
    True
    """
    if experts_interface() is not None:
        return None
    for module in model.modules():
        found = UNEXPORTABLE_EXPERTS.get(type(module).__name__)
        if found is not None:
            family, why = found
            return (
                f"the {family} experts of this transformers release ({type(module).__name__}) "
                f"cannot be exported: {why}, which a trace cannot follow. Install "
                "transformers >= 5.23 (its experts run through transformers.integrations.moe, "
                "which diag's export patch experts_gathered makes traceable)."
            )
    return None


def float64_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``model`` (the caller's model is left as it is) that runs: its
    experts, when their implementation has no float64 kernel
    (:data:`NO_FLOAT64_EXPERTS`), run as :data:`FLOAT64_EXPERTS`.

    >>> float64_copy(torch.nn.Linear(2, 2)).weight.dtype
    torch.float64
    """
    exact = copy.deepcopy(model).to(torch.float64)
    config = getattr(exact, "config", None)
    if getattr(config, "_experts_implementation", None) in NO_FLOAT64_EXPERTS:
        exact.set_experts_implementation(FLOAT64_EXPERTS)
    return exact
