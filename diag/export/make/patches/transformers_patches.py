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

``sdpa_gqa_without_repeat_kv``: when an attention mask is given, transformers'
sdpa integration repeats the key/value heads to the number of query heads
(``repeat_kv``: an expand and a reshape) instead of passing ``enable_gqa=True`` to
:func:`torch.nn.functional.scaled_dot_product_attention` (a choice made for the CUDA
kernels). In an exported graph that is a copy of every layer's whole cache, times the
number of query heads per key/value head, at every step. With ``enable_gqa=True`` the
exported attention reads the cache once (opset >= 23: the ONNX ``Attention`` op takes
the two head counts), and torch computes the same values. The original takes
``(attention_mask, key)`` in transformers 4.57 and ``(attention_mask, key, value)`` in
5.x: the replacement takes the same parameters (the head sizes of key and value are
compared where the release passes the value); another signature skips the patch.

Both patches check the installed release first (``Patch.check``, through
:mod:`diag.compat.transformers_api`) and are skipped with the reason when it does not
have what they replace.

Example::

    >>> [p.name for p in TRANSFORMERS_PATCHES][:2]
    ['sdpa_gqa_without_repeat_kv', 'sliding_layer_traced_as_full.update']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diag.compat.transformers_api import parameter_names, same_parameters
from diag.export.make.patches.patch import Patch

# the parameters use_gqa_in_sdpa has had: (attention_mask, key) in 4.57, with value in 5.x
_GQA_SIGNATURES = (["attention_mask", "key"], ["attention_mask", "key", "value"])


def _as_full_layer(method: str) -> Callable[[Any], Any]:
    def factory(original: Any) -> Any:
        from transformers.cache_utils import DynamicLayer

        return getattr(DynamicLayer, method)

    return factory


def _full_layer_fits(method: str) -> Callable[[Any], str | None]:
    def check(original: Any) -> str | None:
        from transformers.cache_utils import DynamicLayer

        full = getattr(DynamicLayer, method, None)
        if full is None:
            return f"DynamicLayer has no {method} in this transformers release"
        if not same_parameters(full, original):
            return (
                f"DynamicLayer.{method} and DynamicSlidingWindowLayer.{method} take different "
                "arguments in this transformers release"
            )
        return None

    return check


def _gqa_signature_known(original: Any) -> str | None:
    names = parameter_names(original)
    if names not in _GQA_SIGNATURES:
        return f"use_gqa_in_sdpa takes ({', '.join(names)}) in this transformers release"
    return None


def _gqa_in_sdpa(original: Any) -> Any:
    if "value" in parameter_names(original):

        def use_gqa_in_sdpa(attention_mask: Any, key: Any, value: Any) -> bool:
            return key.shape[-1] == value.shape[-1]

        return use_gqa_in_sdpa

    def use_gqa_in_sdpa_without_value(attention_mask: Any, key: Any) -> bool:
        # 4.57 passes neither value nor query: the flag is set for every attention, and
        # the torch patch sdpa_enable_gqa_from_head_counts drops it where the heads are equal
        return True

    return use_gqa_in_sdpa_without_value


TRANSFORMERS_PATCHES: list[Patch] = [
    Patch(
        name="sdpa_gqa_without_repeat_kv",
        target="transformers.integrations.sdpa_attention:use_gqa_in_sdpa",
        factory=_gqa_in_sdpa,
        check=_gqa_signature_known,
        why=(
            "with a mask, transformers repeats the key/value heads (repeat_kv) before sdpa, "
            "a copy of the whole cache per layer and step in the exported graph; "
            "sdpa(enable_gqa=True) computes the same without the copy"
        ),
        kind="transformers",
    ),
]

TRANSFORMERS_PATCHES += [
    Patch(
        name=f"sliding_layer_traced_as_full.{method}",
        target=f"transformers.cache_utils:DynamicSlidingWindowLayer.{method}",
        factory=_as_full_layer(method),
        check=_full_layer_fits(method),
        why=(
            "the trace would bake the sliding layer's Python token counter and its cut "
            "to the window; the sliding mask still applies the window"
        ),
        kind="transformers",
    )
    for method in ("update", "get_mask_sizes", "get_seq_length")
]
