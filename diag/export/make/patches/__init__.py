"""Everything :func:`diag.torch_export_patches` applies, in one package.

* :mod:`~diag.export.make.patches.patch`: :class:`Patch`, one reversible replacement of an
  attribute (target, replacement, why, the check that it fits the installed release);
* :mod:`~diag.export.make.patches.torch_patches`: torch functions whose traced graph does
  not compute what eager torch computes;
* :mod:`~diag.export.make.patches.transformers_patches`: transformers code that a trace
  would specialise to the example inputs;
* :mod:`~diag.export.make.patches.experts_patches`: transformers' mixture-of-experts
  blocks, whose experts a trace cannot follow;
* :mod:`~diag.export.make.patches.router_patches`: mixture-of-experts routers whose
  exported graph could lose the expert they chose (phimoe's, in float16);
* :mod:`~diag.export.make.patches.registry`: the built-in patches by kind
  (:func:`selected_patches`);
* :mod:`~diag.export.make.patches.context`: the context manager :func:`torch_export_patches`
  (registers the cache pytree nodes, applies the patches, undoes everything on exit).
"""

from __future__ import annotations

from diag.export.make.patches.context import PatchReport, torch_export_patches
from diag.export.make.patches.patch import Patch, PatchTargetMissing, resolve_target
from diag.export.make.patches.registry import (
    EXPERTS_PATCHES,
    ROUTER_PATCHES,
    TORCH_PATCHES,
    TRANSFORMERS_PATCHES,
    selected_patches,
)

__all__ = [
    "EXPERTS_PATCHES",
    "ROUTER_PATCHES",
    "TORCH_PATCHES",
    "TRANSFORMERS_PATCHES",
    "Patch",
    "PatchReport",
    "PatchTargetMissing",
    "resolve_target",
    "selected_patches",
    "torch_export_patches",
]
