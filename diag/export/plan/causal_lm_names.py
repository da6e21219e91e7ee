"""The contract's names for the graph of a causal LM that :func:`diag.to_onnx`
exported with its cache among the inputs.

The exporter names the inputs of a flattened cache ``cache_0``, ``cache_1``... and the
outputs after the nodes making them (``linear_14``, ``cat_3``...). A cache flattens to
each layer's key then its value (:mod:`diag.export.make.cache_pytree`), and a causal LM
returns its logits then its cache flattened the same way: that order gives each graph
input and output its name in diag's contract (:data:`diag.contract.DIAG_LAYOUT`), so
:func:`diag.onnx_generate` reads the file as it reads :func:`diag.export_causal_lm`'s.

Example::

    >>> import torch
    >>> from transformers import DynamicCache
    >>> cache = DynamicCache([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))])
    >>> causal_lm_names(
    ...     {"input_ids": torch.zeros(1, 2), "past_key_values": cache},
    ...     ["input_ids", "cache_0", "cache_1"],
    ...     ["linear_7", "cat_1", "cat_2"],
    ... )
    (['input_ids', 'past_key_values.0.key', 'past_key_values.0.value'], ['logits', 'present.0.key', 'present.0.value'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from diag import contract
from diag.export.plan.model import check_causal_lm
from diag.helpers.cache_helper import is_cache


def cache_in(kwargs: Mapping[str, Any] | None) -> Any:
    """The one cache object among ``kwargs``' values, None when there is none."""
    caches = [v for v in (kwargs or {}).values() if is_cache(v)]
    return caches[0] if len(caches) == 1 else None


def check_exportable(model: torch.nn.Module) -> None:
    """Refuses, with the reason :func:`diag.export_causal_lm` gives, a causal LM whose
    cache diag cannot export (the model is run once on two tokens to read it)."""
    from diag.models.cache_layout import cache_layout

    check_causal_lm(model)
    cache_layout(model)


def causal_lm_names(
    kwargs: Mapping[str, Any], inputs: Sequence[str], outputs: Sequence[str]
) -> tuple[list[str], list[str]] | None:
    """The contract's names for the graph ``inputs`` and ``outputs`` of a causal LM
    traced on ``kwargs``, None when they do not map (no cache among ``kwargs``, a
    cache with more than a key and a value per layer, other outputs than the logits and
    the cache): the exporter's names are then kept."""
    cache = cache_in(kwargs)
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    num_layers = len(layers)
    # the inputs named after a keyword keep their name, the others are the cache's
    leaves = [n for n in inputs if n not in kwargs]
    if len(leaves) != 2 * num_layers or len(outputs) != 1 + 2 * num_layers:
        return None
    past = iter(contract.PAST.names(num_layers))
    input_names = [n if n in kwargs else next(past) for n in inputs]
    return input_names, contract.DIAG_LAYOUT.output_names(num_layers)


__all__ = ["cache_in", "causal_lm_names", "check_exportable"]
