"""Patches of torch functions, applied while exporting.

``sdpa_zero_fully_masked_rows``: with left padding, the query rows of the padding
tokens mask every key. Eager :func:`torch.nn.functional.scaled_dot_product_attention`
returns zeros for such a row, the ONNX translation returns the mean of the values
(a softmax over uniformly masked scores), so the logits and the next layers' keys and
values of the padded positions differ between torch and ONNX Runtime. The
replacement multiplies the output by "does this row attend to anything": a no-op in
eager, and it makes the exported graph agree with torch at every position.

``sdpa_broadcast_kv_heads_as_gqa``: multi-query attention written by hand (falcon
with ``multi_query=True``) calls :func:`torch.nn.functional.scaled_dot_product_attention`
with one key/value head for all the query heads and lets eager torch broadcast it.
The ONNX translation (opset >= 23: the ``Attention`` op) accepts fewer key/value heads
only with ``enable_gqa=True`` and fails otherwise; when the query heads are a multiple
of the key/value heads the replacement passes ``enable_gqa=True``, which computes the
same values in torch (each key/value head serves its group of query heads) and
exports without copying the cache.

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

from diag.export.patch import Patch


def _sdpa_zero_fully_masked_rows(original: Callable[..., Any]) -> Callable[..., Any]:
    def scaled_dot_product_attention(query, key, value, attn_mask=None, *args, **kwargs):
        out = original(query, key, value, attn_mask, *args, **kwargs)
        if attn_mask is None or attn_mask.dtype != torch.bool:
            return out
        # [batch, 1 or heads, q, 1]: broadcasts over heads and head_dim
        attends = attn_mask.any(dim=-1, keepdim=True)
        return out * attends.to(out.dtype)

    return scaled_dot_product_attention


def _sdpa_broadcast_kv_heads_as_gqa(original: Callable[..., Any]) -> Callable[..., Any]:
    def scaled_dot_product_attention(query, key, value, *args, **kwargs):
        q_heads, kv_heads = query.shape[-3], key.shape[-3]
        if (
            not kwargs.get("enable_gqa", False)
            and query.dim() == 4
            and kv_heads != q_heads
            and q_heads % kv_heads == 0
        ):
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
        name="sdpa_broadcast_kv_heads_as_gqa",
        target="torch.nn.functional:scaled_dot_product_attention",
        factory=_sdpa_broadcast_kv_heads_as_gqa,
        why=(
            "one key/value head broadcast over every query head (multi-query falcon) "
            "runs in eager torch but the ONNX translation needs enable_gqa=True for it"
        ),
        kind="torch",
    ),
]
