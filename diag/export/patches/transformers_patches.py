"""Patches of transformers code, applied while exporting.

``sliding_layer_traced_as_full``: a
:class:`~transformers.cache_utils.DynamicSlidingWindowLayer` counts the tokens it has
seen in a Python int and cuts its keys and values to the window. A trace bakes both
into the graph (the mask offset of the example, the cut), so the exported model would
be wrong for any other past length. Traced as a plain
:class:`~transformers.cache_utils.DynamicLayer`, the layer concatenates and returns
the whole past; the sliding-window mask built from the config still hides the
positions outside the window, so the logits are unchanged. The ``present`` outputs of
such a layer then hold the whole past (``past + seq`` positions), as for a full layer.

Example::

    >>> [p.name for p in TRANSFORMERS_PATCHES]
    ['sliding_layer_traced_as_full.update', 'sliding_layer_traced_as_full.get_mask_sizes', 'sliding_layer_traced_as_full.get_seq_length']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diag.export.patch import Patch


def _as_full_layer(method: str) -> Callable[[Any], Any]:
    def factory(original: Any) -> Any:
        from transformers.cache_utils import DynamicLayer

        return getattr(DynamicLayer, method)

    return factory


TRANSFORMERS_PATCHES: list[Patch] = [
    Patch(
        name=f"sliding_layer_traced_as_full.{method}",
        target=f"transformers.cache_utils:DynamicSlidingWindowLayer.{method}",
        factory=_as_full_layer(method),
        why=(
            "the trace would bake the sliding layer's Python token counter and its cut "
            "to the window; the sliding mask still applies the window"
        ),
        kind="transformers",
    )
    for method in ("update", "get_mask_sizes", "get_seq_length")
]
