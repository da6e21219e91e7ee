"""The built-in patches, by kind, in the order :func:`torch_export_patches` applies them.

>>> [p.name for p in selected_patches(patch_transformers=False)]
['sdpa_zero_fully_masked_rows', 'sdpa_enable_gqa_from_head_counts']
"""

from __future__ import annotations

from diag.export.make.patches.experts_patches import EXPERTS_PATCHES
from diag.export.make.patches.patch import Patch
from diag.export.make.patches.router_patches import ROUTER_PATCHES
from diag.export.make.patches.torch_patches import TORCH_PATCHES
from diag.export.make.patches.transformers_patches import TRANSFORMERS_PATCHES


def selected_patches(patch_transformers: bool = True, patch_torch: bool = True) -> list[Patch]:
    """The built-in patches of the chosen kinds, in the order they are applied."""
    patches: list[Patch] = []
    if patch_torch:
        patches.extend(TORCH_PATCHES)
    if patch_transformers:
        patches.extend(TRANSFORMERS_PATCHES)
        patches.extend(EXPERTS_PATCHES)
        patches.extend(ROUTER_PATCHES)
    return patches


__all__ = [
    "EXPERTS_PATCHES",
    "ROUTER_PATCHES",
    "TORCH_PATCHES",
    "TRANSFORMERS_PATCHES",
    "selected_patches",
]
