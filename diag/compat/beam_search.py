"""What differs between transformers releases in beam search.

* Beam sampling: 5.x sorts the candidates it draws by their score (highest first)
  before keeping the running beams; 4.57 keeps them in the order of the draws. The
  order decides which candidates may finish a hypothesis (only the first
  ``num_beams``), so diag follows the installed release
  (:func:`beam_sample_sorts_draws`).
* The cache of a step is reordered by its own ``reorder_cache(beam_idx)`` (in place)
  in every release diag supports; a model class may define ``_reorder_cache`` (legacy
  tuple caches), which returns the new cache (:func:`reorder_cache`).

>>> isinstance(beam_sample_sorts_draws(), bool)
True
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

_SORTS: list[bool] = []


def beam_sample_sorts_draws() -> bool:
    """Whether transformers' beam sampling sorts the candidates it draws by score,
    read from its ``_get_top_k_continuations`` (once)."""
    if not _SORTS:
        from transformers.generation.utils import GenerationMixin

        method = getattr(GenerationMixin, "_get_top_k_continuations", None)
        try:
            source = inspect.getsource(method) if method is not None else ""
        except (OSError, TypeError):
            source = ""
        _SORTS.append(".sort(" in source)
    return _SORTS[0]


def reorder_cache(model: Any, cache: Any, rows: torch.Tensor) -> Any:
    """The cache whose row ``i`` is the row ``rows[i]`` of ``cache``, the way
    ``model.generate`` reorders it between two beam search steps.

    >>> from transformers import DynamicCache
    >>> cache = DynamicCache()
    >>> _ = cache.update(torch.arange(2.0).view(2, 1, 1, 1), torch.zeros(2, 1, 1, 1), 0)
    >>> reorder_cache(None, cache, torch.tensor([1, 1])).layers[0].keys.flatten().tolist()
    [1.0, 1.0]
    """
    legacy = getattr(model, "_reorder_cache", None)
    if legacy is not None:
        return legacy(cache, rows)
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)
        return cache
    raise ValueError(
        f"the cache of this model ({type(cache).__name__}) cannot be reordered between "
        "beam search steps (it has no reorder_cache): use num_beams=1."
    )
