"""Links a reference to a diag object written under any path it is importable from.

A diag object is documented once, under one path (``diag.assert_same_tokens``), but the
docstrings, the gallery and autodoc's type hints name it by others: the module that
defines it (``diag.testing.tokens.assert_same_tokens``), the subpackage that re-exports
it (``diag.testing.assert_same_tokens``), or a bare name inside its own module
(``string_type``). Python's domain resolves a reference by its path only; this hook,
run on Sphinx's ``missing-reference`` event, imports the path the reference gives and
links it to the documented name of the same object. A path that imports nothing, or
an object documented nowhere, stays unresolved (and ``-n`` reports it).

Example: in ``conf.py``::

    def setup(app):
        app.connect("missing-reference", reference_paths.resolve)
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

_MISSING = object()


def import_path(path: str) -> Any:
    """The object a dotted path names, or ``_MISSING`` when it imports nothing.

    >>> import diag
    >>> import_path("diag.helpers.string_type.string_type") is diag.string_type
    True
    """
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:  # a module that fails to import documents nothing here
            return _MISSING
        for attr in parts[cut:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _same_object(a: Any, b: Any) -> bool:
    # constants may be equal strings or ints; only modules, classes, functions and
    # other objects with an identity of their own are matched
    if isinstance(a, (str, int, float, bool, bytes, type(None))):
        return False
    return a is b or (inspect.isfunction(a) and inspect.unwrap(a) is inspect.unwrap(b))


def _documented(env: BuildEnvironment) -> dict[str, list[str]]:
    """The documented diag names by their last component, built once per read."""
    objects = env.get_domain("py").objects
    cache = getattr(env, "_diag_documented", None)
    if cache is None or cache[0] != len(objects):
        by_last: dict[str, list[str]] = {}
        for name in objects:
            if name.startswith("diag."):
                by_last.setdefault(name.rsplit(".", 1)[-1], []).append(name)
        cache = (len(objects), by_last)
        env._diag_documented = cache  # type: ignore[attr-defined]
    return cache[1]


def documented_name(env: BuildEnvironment, path: str, module: str | None) -> str | None:
    """The documented name of the object ``path`` imports to (tried inside ``module``
    first when given, as Python's domain does), or None."""
    candidates = [f"{module}.{path}"] if module else []
    candidates.append(path)
    documented = _documented(env)
    for candidate in candidates:
        if not candidate.startswith("diag."):
            continue
        names = documented.get(candidate.rsplit(".", 1)[-1], [])
        if not names:
            continue
        obj = import_path(candidate)
        if obj is _MISSING:
            continue
        for name in names:
            if name != candidate and _same_object(obj, import_path(name)):
                return name
    return None


def resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Sphinx's ``missing-reference`` handler: a python reference to a diag object
    under another path resolved as a reference to its documented name."""
    if node.get("refdomain") != "py":
        return None
    name = documented_name(env, node["reftarget"], node.get("py:module"))
    if name is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
    )
