"""One reversible patch: what it replaces, with what, and why.

A :class:`Patch` names its target by a dotted path ``"package.module:Owner.attribute"``
(the part before ``:`` is imported, the part after is looked up attribute by
attribute). :meth:`Patch.apply` swaps the attribute for ``factory(original)`` and
:meth:`Patch.undo` puts the original back exactly (an attribute that was inherited
rather than set on its owner is deleted again, not copied onto the owner).

A target that does not exist in the installed version of torch or transformers is
not an error: :meth:`Patch.apply` returns a note saying why it was skipped, so that a
new release never breaks ``import diag``. Nor is a target whose shape differs from
what the patch was written for: a patch's ``check(original)`` returns the reason it
does not apply to the installed release (or None), and the patch is skipped with it.
A patch of one model family's module (``imported_only``) applies only when that module
is already imported: no model of the family can be in use otherwise, and importing it
would cost every export the import and register its classes as a side effect.

Example::

    >>> import math
    >>> p = Patch("pi", "math:pi", lambda original: 3.0, "an example")
    >>> p.apply(), math.pi
    (None, 3.0)
    >>> p.undo(); math.pi == 3.141592653589793
    True
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_MISSING = object()


class PatchTargetMissing(LookupError):
    """The target of a patch does not exist in the installed library."""


def resolve_target(target: str) -> tuple[Any, str]:
    """Returns ``(owner, attribute name)`` for a target ``"module:Owner.attr"``.

    Raises :class:`PatchTargetMissing` when the module cannot be imported or an
    attribute on the path is missing.

    >>> import math
    >>> resolve_target("math:pi") == (math, "pi")
    True
    """
    if ":" not in target:
        raise ValueError(
            f"patch target {target!r} must look like 'package.module:Owner.attribute' "
            "(module to import, then the attribute path)."
        )
    module_name, attr_path = target.split(":", 1)
    try:
        owner: Any = importlib.import_module(module_name)
    except Exception as e:  # any import failure means: not in this version
        raise PatchTargetMissing(f"cannot import {module_name!r} ({type(e).__name__}: {e})") from e
    *parents, name = attr_path.split(".")
    for part in parents:
        if not hasattr(owner, part):
            raise PatchTargetMissing(f"{module_name!r} has no attribute path {attr_path!r}")
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        raise PatchTargetMissing(f"{module_name}:{'.'.join(parents) or '<module>'} has no {name!r}")
    return owner, name


@dataclass
class Patch:
    """A reversible replacement of one attribute.

    :param name: short identifier shown in reports
    :param target: ``"module:Owner.attribute"``
    :param factory: ``factory(original) -> replacement``
    :param why: one sentence saying what breaks without it
    :param kind: ``"torch"`` or ``"transformers"``, what
        :func:`diag.export.torch_export_patches` switches on and off
    :param check: ``check(original) -> reason or None``: why the patch does not apply
        to the installed release (the original takes other arguments...), None when it
        does
    :param imported_only: applies only when the target's module is already imported
        (a patch of one model family's module)
    """

    name: str
    target: str
    factory: Callable[[Any], Any]
    why: str
    kind: str = "transformers"
    check: Callable[[Any], str | None] | None = None
    imported_only: bool = False
    _saved: list[tuple[Any, str, Any]] = field(default_factory=list, repr=False)

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    def apply(self) -> str | None:
        """Installs the replacement; returns None, or a note when the target is missing."""
        if self._saved:
            raise RuntimeError(f"patch {self.name!r} is already applied")
        module_name = self.target.split(":", 1)[0]
        if self.imported_only and module_name not in sys.modules:
            return f"skipped {self.name!r}: {module_name} is not imported (no such model in use)"
        try:
            owner, attr = resolve_target(self.target)
        except PatchTargetMissing as e:
            return f"skipped {self.name!r}: target {self.target} not found ({e})"
        # keep what the owner itself held (or that it held nothing and inherited)
        previous = owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else _MISSING
        original = getattr(owner, attr)
        if isinstance(previous, (staticmethod, classmethod)):
            original = previous.__func__
        reason = self.check(original) if self.check is not None else None
        if reason is not None:
            return f"skipped {self.name!r}: {reason}"
        replacement = self.factory(original)
        if isinstance(previous, staticmethod):
            replacement = staticmethod(replacement)
        elif isinstance(previous, classmethod):
            replacement = classmethod(replacement)
        setattr(owner, attr, replacement)
        self._saved.append((owner, attr, previous))
        return None

    def undo(self) -> None:
        """Restores the original attribute (no-op when not applied)."""
        while self._saved:
            owner, attr, previous = self._saved.pop()
            if previous is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, previous)

    def describe(self) -> str:
        return f"{self.name} [{self.kind}] {self.target}: {self.why}"
