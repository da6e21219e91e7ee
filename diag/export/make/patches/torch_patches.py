"""Patches of torch functions, applied while exporting.

``sdpa_zero_fully_masked_rows``: with left padding, the query rows of the padding
tokens mask every key. Eager :func:`torch.nn.functional.scaled_dot_product_attention`
returns zeros for such a row, the ONNX translation returns the mean of the values
(a softmax over uniformly masked scores), so the logits and the next layers' keys and
values of the padded positions differ between torch and ONNX Runtime. The
replacement multiplies the output by "does this row attend to anything": a no-op in
eager, and it makes the exported graph agree with torch at every position.

``sdpa_enable_gqa_from_head_counts``: the ONNX translation of
:func:`torch.nn.functional.scaled_dot_product_attention` (opset >= 23: the
``Attention`` op) reads ``enable_gqa`` literally: it accepts fewer key/value heads than
query heads only with ``enable_gqa=True``, and refuses ``enable_gqa=True`` when the
head counts are equal. Eager torch computes the same values either way. Two callers
hit this: multi-query attention written by hand (falcon with ``multi_query=True``)
passes one key/value head without the flag and lets eager torch broadcast it; the
patch ``sdpa_gqa_without_repeat_kv`` on transformers 4.57 (whose ``use_gqa_in_sdpa``
does not see the value, nor the query) passes the flag for every attention, equal
heads included (deepseek_v3). The replacement sets the flag from the head counts:
True when the query heads are a multiple of fewer key/value heads (each key/value head
serves its group, exported without copying the cache), absent when they are equal.

Example::

    >>> import torch
    >>> q = k = v = torch.ones(1, 1, 2, 4)
    >>> mask = torch.tensor([[False, False], [True, False]]).view(1, 1, 2, 2)
    >>> sdpa = _sdpa_zero_fully_masked_rows(torch.nn.functional.scaled_dot_product_attention)
    >>> sdpa(q, k, v, attn_mask=mask)[0, 0, :, 0].tolist()
    [0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diag.export.make.patches.patch import Patch


def _sdpa_zero_fully_masked_rows(original: Callable[..., Any]) -> Callable[..., Any]:
    def scaled_dot_product_attention(query, key, value, attn_mask=None, *args, **kwargs):
        out = original(query, key, value, attn_mask, *args, **kwargs)
        if attn_mask is None or attn_mask.dtype != torch.bool:
            return out
        # [batch, 1 or heads, q, 1]: broadcasts over heads and head_dim
        attends = attn_mask.any(dim=-1, keepdim=True)
        return out * attends.to(out.dtype)

    return scaled_dot_product_attention


def _sdpa_enable_gqa_from_head_counts(original: Callable[..., Any]) -> Callable[..., Any]:
    def scaled_dot_product_attention(query, key, value, *args, **kwargs):
        if query.dim() == 4:
            q_heads, kv_heads = query.shape[-3], key.shape[-3]
            if kv_heads == q_heads:
                # a no-op in torch, refused by the ONNX translation
                kwargs.pop("enable_gqa", None)
            elif q_heads % kv_heads == 0:
                kwargs["enable_gqa"] = True
        return original(query, key, value, *args, **kwargs)

    return scaled_dot_product_attention


TORCH_PATCHES: list[Patch] = [
    Patch(
        name="sdpa_zero_fully_masked_rows",
        target="torch.nn.functional:scaled_dot_product_attention",
        factory=_sdpa_zero_fully_masked_rows,
        why=(
            "a query row that masks every key (left padding) gives zeros in eager torch "
            "but the mean of the values in the ONNX translation"
        ),
        kind="torch",
    ),
    Patch(
        name="sdpa_enable_gqa_from_head_counts",
        target="torch.nn.functional:scaled_dot_product_attention",
        factory=_sdpa_enable_gqa_from_head_counts,
        why=(
            "the ONNX translation needs enable_gqa=True for fewer key/value heads than "
            "query heads (multi-query falcon broadcasts one without it) and refuses it "
            "for equal head counts (4.57's use_gqa_in_sdpa sets it for every attention)"
        ),
        kind="torch",
    ),
]
