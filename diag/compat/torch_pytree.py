"""torch's pytree registries: where a registration lives and how to undo it in each.

torch keeps one pytree registry per implementation:

* the Python pytree (``torch.utils._pytree``): always there;
* the C++ pytree (``torch.utils._cxx_pytree``), optree's registry in its namespace
  ``"torch"``: there when optree (at least torch's minimum release) is installed, which
  many libraries bring. ``torch.utils._pytree.register_pytree_node`` registers a class
  in it too: at once when ``torch.utils._cxx_pytree`` has been imported (``torch.export``
  imports it), as a pending entry that this import registers otherwise.

torch only offers a removal from the Python registry (``_deregister_pytree_node``). A
class removed there alone stays in optree's, and the next registration of the class
fails with optree's ``ValueError: PyTree type ... is already registered in namespace
'torch'``: :func:`deregister_pytree_node` removes it from every registry that holds it.
The private names read here are the same in torch 2.13 and 2.14; a release that moves
them gets :class:`TorchPytreeApiError`, naming the installed torch and the tested one.

Example::

    >>> import torch.utils._pytree as pytree
    >>> class Pair:
    ...     def __init__(self, a, b):
    ...         self.a, self.b = a, b
    >>> pytree.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda v, _: Pair(*v))
    >>> "python" in registries_holding(Pair)
    True
    >>> deregister_pytree_node(Pair)
    >>> registries_holding(Pair)
    []
"""

from __future__ import annotations

from typing import Any

import torch.utils._pytree as pytree

#: optree's namespace of torch's C++ pytree (torch.utils._cxx_pytree registers there)
CXX_NAMESPACE = "torch"
#: the private names of torch.utils._pytree read here
_PYTHON_NAMES = (
    "_deregister_pytree_node",
    "_private_register_pytree_node",
    "_cxx_pytree_exists",
    "_cxx_pytree_imported",
    "_cxx_pytree_pending_imports",
    "_NODE_REGISTRY_LOCK",
)


class TorchPytreeApiError(ImportError):
    """The installed torch lacks a piece of its pytree registries diag uses."""


def _private(name: str) -> Any:
    if not hasattr(pytree, name):
        from diag.compat.versions import pinned_releases

        tested = pinned_releases().get("torch", "?")
        raise TorchPytreeApiError(
            f"torch.utils._pytree.{name} is missing in the installed torch "
            f"{torch_version()}; diag registers the cache classes as pytree nodes "
            f"(diag.export.make.cache_pytree) through it and is tested with torch {tested}: "
            f"install it (pip install torch=={tested}), or adapt diag/compat/torch_pytree.py."
        )
    return getattr(pytree, name)


def torch_version() -> str:
    import torch

    return torch.__version__


def cxx_pytree_exists() -> bool:
    """Whether torch uses the C++ pytree in this process (optree installed, at least
    the release torch requires)."""
    return bool(_private("_cxx_pytree_exists"))


def registries() -> list[str]:
    """The registries torch keeps: ``["python"]``, and ``"cxx"`` when optree is installed.

    >>> registries()[0]
    'python'
    """
    return ["python", "cxx"] if cxx_pytree_exists() else ["python"]


def _pending(cls: type) -> list[Any]:
    # the registrations waiting for the import of torch.utils._cxx_pytree: (args, kwargs)
    return [e for e in _private("_cxx_pytree_pending_imports") if e[0][0] is cls]


def _in_optree(cls: type) -> bool:
    import optree

    return optree.register_pytree_node.get(cls, namespace=CXX_NAMESPACE) is not None


def registries_holding(cls: type) -> list[str]:
    """The registries that hold ``cls``: ``"python"``, ``"cxx"`` (registered in
    optree's namespace ``"torch"``, or pending until ``torch.utils._cxx_pytree`` is
    imported)."""
    held = ["python"] if cls in pytree.SUPPORTED_NODES else []
    if cxx_pytree_exists():
        imported = _private("_cxx_pytree_imported")
        if (imported and _in_optree(cls)) or (not imported and _pending(cls)):
            held.append("cxx")
    return held


def deregister_pytree_node(cls: type) -> None:
    """Removes ``cls`` from every pytree registry that holds it (the inverse of
    ``torch.utils._pytree.register_pytree_node``). A class no registry holds is an
    error: the caller removes only what was registered."""
    held = registries_holding(cls)
    if not held:
        raise ValueError(
            f"{cls.__qualname__} is not a pytree node in any of torch's registries "
            f"({', '.join(registries())}): nothing to remove; remove only what was registered."
        )
    if "python" in held:
        _private("_deregister_pytree_node")(cls)
    if "cxx" not in held:
        return
    if _private("_cxx_pytree_imported"):
        import optree

        optree.unregister_pytree_node(cls, namespace=CXX_NAMESPACE)
        return
    pending = _private("_cxx_pytree_pending_imports")
    with _private("_NODE_REGISTRY_LOCK"):
        pending[:] = [e for e in pending if e[0][0] is not cls]


def python_registration(cls: type) -> tuple[Any, Any]:
    """``(node, serialized)``: the Python pytree's registration of ``cls``, to give
    back to :func:`restore_python_registration`."""
    return pytree.SUPPORTED_NODES[cls], pytree.SUPPORTED_SERIALIZED_TYPES[cls]


def replace_python_registration(
    cls: type,
    flatten_fn: Any,
    unflatten_fn: Any,
    *,
    serialized_type_name: str,
    flatten_with_keys_fn: Any = None,
    to_dumpable_context: Any = None,
    from_dumpable_context: Any = None,
) -> None:
    """Registers ``cls`` in the Python pytree alone, in place of the registration it
    has there; the C++ registry keeps what it holds (``torch.export`` flattens with the
    Python pytree)."""
    if cls in pytree.SUPPORTED_NODES:
        _private("_deregister_pytree_node")(cls)
    _private("_private_register_pytree_node")(
        cls,
        flatten_fn,
        unflatten_fn,
        serialized_type_name=serialized_type_name,
        to_dumpable_context=to_dumpable_context,
        from_dumpable_context=from_dumpable_context,
        flatten_with_keys_fn=flatten_with_keys_fn,
    )


def restore_python_registration(cls: type, saved: tuple[Any, Any]) -> None:
    """Puts back in the Python pytree a registration :func:`python_registration` saved."""
    node, serialized = saved
    replace_python_registration(
        cls,
        node.flatten_fn,
        node.unflatten_fn,
        serialized_type_name=serialized.serialized_type_name,
        flatten_with_keys_fn=node.flatten_with_keys_fn,
        to_dumpable_context=serialized.to_dumpable_context,
        from_dumpable_context=serialized.from_dumpable_context,
    )


__all__ = [
    "CXX_NAMESPACE",
    "TorchPytreeApiError",
    "cxx_pytree_exists",
    "deregister_pytree_node",
    "python_registration",
    "registries",
    "registries_holding",
    "replace_python_registration",
    "restore_python_registration",
]
