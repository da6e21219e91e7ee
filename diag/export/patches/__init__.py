"""The patches :func:`diag.export.torch_export_patches` applies, one module per library.

* :mod:`diag.export.patches.torch_patches`: torch functions whose traced graph does
  not compute what eager torch computes;
* :mod:`diag.export.patches.transformers_patches`: transformers code that a trace
  would specialise to the example inputs.

Each is a list of :class:`diag.export.patch.Patch` (name, target, replacement, why).
"""

from __future__ import annotations

from diag.export.patches.torch_patches import TORCH_PATCHES
from diag.export.patches.transformers_patches import TRANSFORMERS_PATCHES

__all__ = ["TORCH_PATCHES", "TRANSFORMERS_PATCHES"]
