"""Which public names of ``diag`` the API page does not document.

``conf.py`` calls :func:`check_api_page` before Sphinx reads a page, so a name added
to ``diag._LAZY`` without its entry in ``api.rst`` fails the build with the line to
add. A name counts as documented the way autodoc documents it:

* ``.. autofunction:: diag.NAME`` (or ``autoclass``, ``autodata``, ``automodule``...);
* any ``.. auto*::`` directive whose target is the same object under another path
  (``.. autofunction:: diag.testing.record``);
* an ``.. automodule:: MODULE`` block whose ``:members:`` option lists ``NAME``, or is
  bare and ``NAME`` is among the members autodoc takes (the module's ``__all__``, else
  the public names it defines), provided ``MODULE.NAME`` is ``diag.NAME``.

Example::

    >>> import diag
    >>> undocumented(".. autofunction:: diag.generate\\n", diag, names=["generate", "to_onnx"])
    ['to_onnx']
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

_DIRECTIVE = re.compile(r"^(\s*)\.\. (auto\w+)::\s*(\S+)\s*$")
_OPTION = re.compile(r"^\s+:([\w-]+):\s*(.*)$")


@dataclass
class Directive:
    """One ``.. auto*:: target`` directive of a page and its options.

    :param kind: ``autofunction``, ``automodule``...
    :param target: the dotted path it documents
    :param options: ``{option: value}``, ``""`` for a flag such as a bare ``:members:``
    """

    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)


def parse_directives(rst: str) -> list[Directive]:
    """The autodoc directives of a reStructuredText page, with their options.

    >>> [d.options for d in parse_directives(".. automodule:: m\\n    :members: a, b\\n")]
    [{'members': 'a, b'}]
    """
    directives: list[Directive] = []
    current: Directive | None = None
    for line in rst.splitlines():
        match = _DIRECTIVE.match(line)
        if match:
            current = Directive(match.group(2), match.group(3))
            directives.append(current)
            continue
        option = _OPTION.match(line) if current is not None else None
        if option:
            current.options[option.group(1)] = option.group(2).strip()
        else:
            # the options end at the first line that is not one (blank line, text)
            current = None
    return directives


# what _resolve returns for a path whose module lacks the attribute
_ABSENT = object()


def _resolve(dotted: str) -> Any:
    """The object at ``dotted`` (``diag.testing.record``): the longest importable module
    prefix, then attributes (:data:`_ABSENT` when one is missing: autodoc warns there)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            value = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but one of its imports does not
                raise
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr, _ABSENT)
        return value
    raise ModuleNotFoundError(f"no module in {dotted!r} can be imported")


def _automodule_members(directive: Directive) -> list[str]:
    """The names an ``automodule`` directive documents (autodoc's rule for ``:members:``)."""
    if "members" not in directive.options or "no-members" in directive.options:
        return []
    listed = directive.options["members"]
    if listed:
        return [name.strip() for name in listed.split(",") if name.strip()]
    module = _resolve(directive.target)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def _candidates(directives: list[Directive], name: str) -> Iterable[str]:
    """Dotted paths of the page that may document the public ``name`` under another path."""
    for directive in directives:
        if directive.target.rsplit(".", 1)[-1] == name:
            yield directive.target
        if directive.kind == "automodule" and name in _automodule_members(directive):
            yield f"{directive.target}.{name}"


def undocumented(rst: str, package: ModuleType, names: Iterable[str] | None = None) -> list[str]:
    """The public ``names`` of ``package`` (default: its ``_LAZY``) that the page ``rst``
    does not document, sorted. Imports only what a name needs to be matched."""
    directives = parse_directives(rst)
    targets = {d.target for d in directives}
    missing = []
    for name in sorted(package._LAZY if names is None else names):
        if f"{package.__name__}.{name}" in targets:
            continue
        public = getattr(package, name)
        if not any(_resolve(path) is public for path in _candidates(directives, name)):
            missing.append(name)
    return missing


def _directive_for(value: Any) -> str:
    if inspect.ismodule(value):
        return "automodule"
    if inspect.isclass(value):
        return "autoclass"
    if callable(value):
        return "autofunction"
    return "autodata"


def check_api_page(path: str, package: ModuleType) -> None:
    """Raises RuntimeError naming each public name of ``package`` the page at ``path``
    does not document, with the directive that would."""
    with open(path, encoding="utf-8") as f:
        missing = undocumented(f.read(), package)
    if missing:
        fixes = "\n".join(
            f"    .. {_directive_for(getattr(package, name))}:: {package.__name__}.{name}"
            f"    (defined in {package._LAZY[name]})"
            for name in missing
        )
        raise RuntimeError(
            f"{path} does not document these public names of {package.__name__}: {missing}.\n"
            f"Add to the page, in the section where each belongs:\n{fixes}\n"
            "or list the name in the ':members:' of an '.. automodule::' block of the "
            "module that defines it."
        )
