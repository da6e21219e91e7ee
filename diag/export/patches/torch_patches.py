"""Patches of torch functions, applied while exporting.

``sdpa_zero_fully_masked_rows``: with left padding, the query rows of the padding
tokens mask every key. Eager :func:`torch.nn.functional.scaled_dot_product_attention`
returns zeros for such a row, the ONNX translation returns the mean of the values
(a softmax over uniformly masked scores), so the logits and the next layers' keys and
values of the padded positions differ between torch and ONNX Runtime. The
replacement multiplies the output by "does this row attend to anything": a no-op in
eager, and it makes the exported graph agree with torch at every position.

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
]
