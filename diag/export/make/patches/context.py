"""The context manager that makes a causal LM of transformers exportable.

Inside ``with torch_export_patches():``

* the cache classes of transformers are pytree nodes
  (:mod:`diag.export.make.cache_pytree`), so a ``DynamicCache`` can be an input with
  dynamic shapes and an output of the exported program;
* the patches of :mod:`diag.export.make.patches.registry` are applied.

Everything is undone on exit, also when the body raises. A patch whose target does
not exist in the installed torch / transformers is skipped with a note (printed with
``verbose``, always listed in the report).

Example::

    >>> import torch
    >>> from diag.export import torch_export_patches
    >>> with torch_export_patches() as report:
    ...     pass  # torch.export.export(model, (), kwargs=inputs, dynamic_shapes=ds)
    >>> "sdpa_zero_fully_masked_rows" in report.applied
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from diag.export.make.cache_pytree import register_cache_pytrees, unregister_cache_pytrees
from diag.export.make.patches.patch import Patch
from diag.export.make.patches.registry import selected_patches


@dataclass
class PatchReport:
    """What :func:`torch_export_patches` did: names of the applied patches, notes on the
    skipped ones, the classes registered as pytree nodes."""

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pytree_nodes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def torch_export_patches(
    patch_transformers: bool = True,
    patch_torch: bool = True,
    verbose: int = 0,
    extra_patches: Sequence[Patch] = (),
) -> Iterator[PatchReport]:
    """Applies the export patches for the duration of the ``with`` block.

    :param patch_transformers: registers the cache classes as pytree nodes and applies
        the transformers patches
    :param patch_torch: applies the torch patches
    :param verbose: prints what is patched (and skipped) when > 0
    :param extra_patches: more :class:`~diag.export.make.patches.Patch` objects to apply
        after the built-in ones (undone the same way)
    :return: a :class:`PatchReport`, filled on enter

    >>> with torch_export_patches(patch_torch=False) as report:
    ...     "DynamicCache" in report.pytree_nodes
    True
    """
    report = PatchReport()
    patches = [*selected_patches(patch_transformers, patch_torch), *extra_patches]
    applied: list[Patch] = []
    registered: list[type] = []
    try:
        if patch_transformers:
            registered = register_cache_pytrees(verbose=verbose)
            report.pytree_nodes = [c.__name__ for c in registered]
        for patch in patches:
            note = patch.apply()
            if note is None:
                applied.append(patch)
                report.applied.append(patch.name)
                if verbose:
                    print(f"[torch_export_patches] patched {patch.describe()}")
            else:
                report.skipped.append(note)
                if verbose:
                    print(f"[torch_export_patches] {note}")
        yield report
    finally:
        # reverse order: a later patch may wrap what an earlier one installed
        for patch in reversed(applied):
            patch.undo()
        unregister_cache_pytrees(registered)
        if verbose:
            print(
                f"[torch_export_patches] undone {len(applied)} patches, "
                f"{len(registered)} pytree nodes"
            )
