"""Links a reference to a diag object written under any path it is importable from.

A diag object is documented once, under one path (``diag.assert_same_tokens``), but the
docstrings, the gallery and autodoc's type hints name it by others: the module that
defines it (``diag.testing.tokens.assert_same_tokens``), the subpackage that re-exports
it (``diag.testing.assert_same_tokens``), or a name as the module whose docstring
refers to it reads it (``ExportResult`` in ``diag.export.causal_lm``, ``ort.InferenceSession``
where ``onnxruntime`` is imported as ``ort``). Python's domain resolves a reference by
its path only; this hook, run on Sphinx's ``missing-reference`` event, imports the path
the reference gives, in the module of the docstring first, and links it to the
documented name of the same object (or, for an object of another project, to its
entry in that project's inventory). A path that imports nothing, or an object
documented nowhere, stays unresolved (and ``-n`` reports it).

Example: in ``conf.py``::

    def setup(app):
        app.connect("missing-reference", reference_paths.resolve)
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext import intersphinx

_MISSING = object()
_DOCSTRING_OF = re.compile(r"docstring of ([\w.]+)")
_CONSTANTS = (str, int, float, bool, bytes, type(None))


def import_path(path: str) -> Any:
    """The object a dotted path names, or ``_MISSING`` when it imports nothing.

    >>> import diag
    >>> import_path("diag.helpers.string_type.string_type") is diag.helpers.string_type
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
    # a constant (a string, a number) has no identity of its own: two names that end
    # alike (the caller checks) holding equal values of one type are one constant
    if isinstance(a, _CONSTANTS):
        return type(a) is type(b) and a == b
    return a is b or (inspect.isfunction(a) and inspect.unwrap(a) is inspect.unwrap(b))


def context_modules(node: nodes.Element) -> list[str]:
    """The modules a reference is read in, innermost first: the ``py:module`` Sphinx
    gives it, then the module (and its packages) whose docstring holds it.

    >>> context_modules(nodes.Element(source="x.py:docstring of diag.export.causal_lm.f"))
    ['diag.export.causal_lm', 'diag.export', 'diag']
    """
    found: list[str] = []
    match = _DOCSTRING_OF.search(node.get("source") or node.source or "")
    if match:
        parts = match.group(1).split(".")
        for cut in range(len(parts) - 1, 0, -1):
            found.append(".".join(parts[:cut]))
    module = node.get("py:module")
    if module and node.get("py:class"):
        # a signature's type hint: read it in the module that defines the class
        owner = getattr(import_path(f"{module}.{node['py:class']}"), "__module__", None)
        if isinstance(owner, str) and owner not in found:
            found.insert(0, owner)
    if module and module not in found:
        found.insert(0, module)
    return [m for m in found if m == "diag" or m.startswith("diag.")]


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


def documented_name(env: BuildEnvironment, path: str, modules: list[str]) -> str | None:
    """The documented name of the object ``path`` imports to (tried inside each of
    ``modules`` first, then as written), or None."""
    candidates = [f"{module}.{path}" for module in modules] + [path]
    documented = _documented(env)
    for candidate in candidates:
        if not candidate.startswith("diag."):
            continue
        names = documented.get(candidate.rsplit(".", 1)[-1], [])
        if not names:
            continue
        obj = import_path(candidate)
        if obj is _MISSING:
            field = _field_of(candidate, names)
            if field is not None:
                return field
            continue
        for name in names:
            # the candidate itself may be the documented name: Sphinx looked it up in
            # another module than the docstring's
            if name == candidate or _same_object(obj, import_path(name)):
                return name
    return None


def module_entry(env: BuildEnvironment, path: str, modules: list[str]) -> str | None:
    """The documented module of the diag object ``path`` imports to, when the object has
    no entry of its own (a helper the module's docstring names): the reference links to
    the module, whose page says what it holds. None when ``path`` imports nothing."""
    documented_modules = env.get_domain("py").modules
    for candidate in [f"{module}.{path}" for module in modules] + [path]:
        if not candidate.startswith("diag."):
            continue
        obj = import_path(candidate)
        if obj is _MISSING:
            continue
        if inspect.ismodule(obj):
            owner = obj.__name__
        else:
            owner = getattr(obj, "__module__", None)
            if not isinstance(owner, str) or not owner.startswith("diag"):
                owner = candidate.rsplit(".", 1)[0]  # a constant: the module it is read in
        while owner and owner not in documented_modules:
            owner = owner.rpartition(".")[0]
        if owner:
            return owner
    return None


def _field_of(path: str, names: list[str]) -> str | None:
    """The documented name of a field a class declares without a class attribute (a
    dataclass field without default): ``path`` is ``Class.field``, the class imported."""
    parent, attr = path.rsplit(".", 1)
    owner = import_path(parent)
    if not inspect.isclass(owner) or attr not in getattr(owner, "__annotations__", {}):
        return None
    for name in names:
        if import_path(name.rsplit(".", 1)[0]) is owner:
            return name
    return None


def external_name(path: str, modules: list[str]) -> str | None:
    """The path another project defines the object under, when ``path`` read in one
    of ``modules`` reaches outside diag (``ort.InferenceSession`` in a module that
    imports ``onnxruntime as ort``), or None."""
    for module in modules:
        obj = import_path(f"{module}.{path}")
        if obj is _MISSING or isinstance(obj, _CONSTANTS):
            continue
        if inspect.ismodule(obj):
            name = obj.__name__
        else:
            owner, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
            if not isinstance(owner, str) or not isinstance(qualname, str):
                continue
            name = f"{owner}.{qualname}"
        if not name.startswith("diag.") and name != path:
            return name
    return None


def resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Sphinx's ``missing-reference`` handler: a python reference to a diag object
    under another path resolved as a reference to its documented name."""
    if node.get("refdomain") != "py":
        return None
    modules = context_modules(node)
    name = documented_name(env, node["reftarget"], modules)
    if name is not None:
        domain = env.get_domain("py")
        # "obj": a role of another kind than the entry (``:data:`` for a class alias)
        # still links to the one object the path names
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", name, node, contnode)
    name = external_name(node["reftarget"], modules)
    if name is None:
        module = module_entry(env, node["reftarget"], modules)
        if module is None:
            return None
        domain = env.get_domain("py")
        return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", module, node, contnode)
    renamed = copy.copy(node)
    renamed["reftarget"] = name
    renamed["reftype"] = "obj"
    return intersphinx.missing_reference(app, env, renamed, contnode)
