"""The model an export is asked for, read before anything is traced: refused when it is
not a causal LM of transformers with a key/value cache, its name in the export cache,
and the optional inputs its forward takes (``position_ids``, ``logits_to_keep``).

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> model_name(model), takes_position_ids(model), takes_logits_to_keep(model)
    ('llama', True, True)
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from diag.compat.transformers_api import cache_argument, forward_parameters

#: the forward's argument that selects the positions whose logits are computed
#: (transformers' name, 4.57 to 5.x; :mod:`diag.export.make.logits_to_keep` feeds it)
LOGITS_TO_KEEP_ARGUMENT = "logits_to_keep"


def model_name(model: torch.nn.Module) -> str:
    """A file-system safe name of the model (its folder's or its type's)."""
    config = getattr(model, "config", None)
    name = (
        getattr(config, "_name_or_path", "")
        or getattr(config, "model_type", "")
        or type(model).__name__
    )
    name = os.path.basename(os.path.normpath(str(name))) or type(model).__name__
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def check_causal_lm(model: Any) -> None:
    """Raises a TypeError saying what to do when ``model`` is not a causal LM of
    transformers with a key/value cache, or has experts the installed transformers
    runs in a way no trace can follow."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"export_causal_lm expects a torch causal LM (e.g. AutoModelForCausalLM), got "
            f"{type(model).__name__}; load one with diag.load_pretrained(name)."
        )
    if getattr(model, "config", None) is None:
        raise TypeError(
            f"{type(model).__name__} has no `config`: export_causal_lm needs a model of "
            "transformers (it rebuilds the cache from its config); use diag.to_onnx for "
            "other models."
        )
    if cache_argument(model) is None or "input_ids" not in forward_parameters(model):
        raise TypeError(
            f"{type(model).__name__}.forward does not take input_ids and a key/value cache: "
            "export_causal_lm exports decoder-only causal LMs with a key/value cache."
        )
    from diag.compat.moe_blocks import unexportable_experts

    experts = unexportable_experts(model)
    if experts is not None:
        raise TypeError(f"{type(model).__name__}: {experts}")


def takes_position_ids(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` accepts ``position_ids``."""
    return "position_ids" in forward_parameters(model)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (every causal LM of the zoo
    does, on every supported transformers release)."""
    return LOGITS_TO_KEEP_ARGUMENT in forward_parameters(model)


__all__ = [
    "LOGITS_TO_KEEP_ARGUMENT",
    "check_causal_lm",
    "model_name",
    "takes_logits_to_keep",
    "takes_position_ids",
]
