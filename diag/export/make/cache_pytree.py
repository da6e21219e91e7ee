"""Cache classes of transformers as pytree nodes, for :func:`torch.export.export`.

:func:`torch.export.export` only sees tensors inside containers it knows how to
flatten (pytree nodes). The cache classes of transformers are not registered, so
neither a cache given as input nor one returned by the model can get dynamic
shapes. :func:`register_cache_pytrees` registers them, :func:`unregister_cache_pytrees`
removes exactly what it registered, from each pytree registry torch keeps (the Python
one, and optree's when optree is installed: :mod:`diag.compat.torch_pytree`), so the
next export registers them again; :func:`diag.export.torch_export_patches` calls both.
transformers' own exporter (``transformers.exporters``) registers the same classes
with its own flattening for the rest of the process: diag sets those registrations
aside for the time of its export and puts them back afterwards, so both exporters
run in one process.

Flattening (agreed with :func:`diag.models.make_dummy_inputs`, which builds the
matching ``dynamic_shapes``):

* :class:`~transformers.DynamicCache`: a flat list of ``2 * num_layers`` tensors
  ``[key_0, value_0, key_1, value_1, ...]``; the layer classes (sliding window or not,
  and their window) go into the context.
* :class:`~transformers.StaticCache`: ``[key_0, value_0, length_0, key_1, ...]``
  (a static layer also holds its filled length as a tensor).
* :class:`~transformers.EncoderDecoderCache`: its two caches.
* the layer classes themselves (``DynamicLayer``...): ``[keys, values]``.

The layers' attributes differ between transformers releases (5.x static layers keep
their filled length in a ``cumulative_length`` tensor, 4.57's full static layer keeps
none; 5.x sliding layers hold a ``_sliding_window_tensor``, 4.57's do not): the
context records which of the attributes derived from the tensors the flattened layer
had, and unflattening rebuilds exactly those, so one code serves every release.

No tensor is created while unflattening a cache inside a trace: a tensor created
there would become a constant the exporter cannot place. A sliding-window layer is
rebuilt with ``cumulative_length`` = the number of positions it holds (what
:func:`diag.helpers.cache_helper.make_dynamic_cache` gives for a past shorter than
the window) plus the offset recorded in the context when it was flattened eagerly.

Example::

    >>> import torch, torch.utils._pytree as pytree
    >>> from transformers import DynamicCache
    >>> cache = DynamicCache([(torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))])
    >>> registered = register_cache_pytrees()
    >>> leaves, spec = pytree.tree_flatten(cache)
    >>> len(leaves), pytree.tree_unflatten(leaves, spec).get_seq_length()
    (2, 3)
    >>> unregister_cache_pytrees(registered)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from diag.compat import torch_pytree

# attributes a layer derives from its tensors, or that are tensors themselves:
# never stored in the (static, hashable) context
_DERIVED = {
    "keys",
    "values",
    "dtype",
    "device",
    "is_initialized",
    "cumulative_length",
    "_sliding_window_tensor",
    "batch_size",
    "num_heads",
    "k_head_dim",
    "v_head_dim",
}
_STATIC_TYPES = (bool, int, float, str, type(None))


def _static_attrs(layer: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(
        sorted(
            (k, v) for k, v in vars(layer).items() if k not in _DERIVED and type(v) in _STATIC_TYPES
        )
    )


def _is_static_layer(layer_cls: type) -> bool:
    # static layers hold a tensor length; dynamic ones an int (sliding) or nothing
    from transformers import cache_utils

    static = getattr(cache_utils, "StaticLayer", None)
    return static is not None and issubclass(layer_cls, static)


def _tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    checks = [getattr(compiler, n, None) for n in ("is_compiling", "is_exporting")]
    return any(check() for check in checks if check is not None)


def _has_length_leaf(layer_cls: type, derived: tuple[str, ...]) -> bool:
    # a static layer's filled length is a leaf (a tensor in 5.x, an int in 4.57's
    # sliding static layer) when the layer has one at all (4.57's full static layer: none)
    return _is_static_layer(layer_cls) and "cumulative_length" in derived


def _layer_leaves(layer: Any) -> list[Any]:
    leaves = [getattr(layer, "keys", None), getattr(layer, "values", None)]
    if _is_static_layer(type(layer)) and hasattr(layer, "cumulative_length"):
        leaves.append(layer.cumulative_length)
    return leaves


def _layer_context(layer: Any) -> tuple[Any, ...]:
    offset = 0
    length = getattr(layer, "cumulative_length", None)
    keys = getattr(layer, "keys", None)
    if type(length) is int and isinstance(keys, torch.Tensor) and type(keys.shape[-2]) is int:
        # a sliding layer cut to its window remembers more positions than it holds
        offset = length - keys.shape[-2]
    # which derived attributes this release's layer has: rebuilt, and only those
    derived = tuple(sorted(k for k in vars(layer) if k in _DERIVED))
    return (
        type(layer),
        _static_attrs(layer),
        bool(getattr(layer, "is_initialized", False)),
        offset,
        derived,
    )


def _build_layer(context: tuple[Any, ...], leaves: list[Any]) -> Any:
    cls, attrs, initialized, offset, derived = context
    layer = cls.__new__(cls)
    for k, v in attrs:
        setattr(layer, k, v)
    keys, values = leaves[0], leaves[1]
    layer.keys, layer.values = keys, values
    layer.is_initialized = initialized
    rebuilt: dict[str, Any] = {}
    if isinstance(keys, torch.Tensor):
        rebuilt.update(dtype=keys.dtype, device=keys.device)
    if _is_static_layer(cls):
        if _has_length_leaf(cls, derived):
            rebuilt["cumulative_length"] = leaves[2]
        if isinstance(keys, torch.Tensor):
            rebuilt.update(batch_size=keys.shape[0], num_heads=keys.shape[1])
            rebuilt.update(k_head_dim=keys.shape[-1], v_head_dim=values.shape[-1])
    elif hasattr(layer, "sliding_window"):
        length = keys.shape[-2] if isinstance(keys, torch.Tensor) else 0
        rebuilt["cumulative_length"] = length + offset
        # created eagerly only: inside a trace it would be a constant the exporter cannot lift
        if not _tracing():
            window = torch.tensor(layer.sliding_window, dtype=torch.long)
            rebuilt["_sliding_window_tensor"] = window
    for name, value in rebuilt.items():
        if name in derived:
            setattr(layer, name, value)
    return layer


def _leaves_per_layer(context: tuple[Any, ...]) -> int:
    return 3 if _has_length_leaf(context[0], context[4]) else 2


# --- layered caches (DynamicCache, StaticCache and subclasses) ---


def flatten_cache(cache: Any) -> tuple[list[Any], tuple[Any, ...]]:
    """Flattens a layered cache: ``([key_0, value_0, ...], context)``."""
    leaves: list[Any] = []
    layers = []
    for layer in cache.layers:
        leaves.extend(_layer_leaves(layer))
        layers.append(_layer_context(layer))
    replicate = getattr(cache, "layer_class_to_replicate", None)
    return leaves, (type(cache), tuple(layers), replicate)


def unflatten_cache(leaves: Any, context: tuple[Any, ...]) -> Any:
    """Inverse of :func:`flatten_cache`."""
    cls, layer_contexts, replicate = context
    leaves = list(leaves)
    layers = []
    pos = 0
    for layer_context in layer_contexts:
        n = _leaves_per_layer(layer_context)
        layers.append(_build_layer(layer_context, leaves[pos : pos + n]))
        pos += n
    cache = cls.__new__(cls)
    cache.layers = layers
    cache.layer_class_to_replicate = replicate
    cache.offloading = False
    return cache


def flatten_cache_with_keys(cache: Any) -> tuple[list[tuple[Any, Any]], tuple[Any, ...]]:
    leaves, context = flatten_cache(cache)
    return [(pytree.SequenceKey(i), leaf) for i, leaf in enumerate(leaves)], context


# --- single layers ---


def flatten_layer(layer: Any) -> tuple[list[Any], tuple[Any, ...]]:
    return _layer_leaves(layer), _layer_context(layer)


def unflatten_layer(leaves: Any, context: tuple[Any, ...]) -> Any:
    return _build_layer(context, list(leaves))


def flatten_layer_with_keys(layer: Any) -> tuple[list[tuple[Any, Any]], tuple[Any, ...]]:
    leaves, context = flatten_layer(layer)
    return [(pytree.SequenceKey(i), leaf) for i, leaf in enumerate(leaves)], context


# --- encoder-decoder cache ---


def flatten_encoder_decoder(cache: Any) -> tuple[list[Any], Any]:
    return [cache.self_attention_cache, cache.cross_attention_cache], tuple(
        sorted(getattr(cache, "is_updated", {}).items())
    )


def unflatten_encoder_decoder(children: Any, context: Any) -> Any:
    from transformers.cache_utils import EncoderDecoderCache

    cache = EncoderDecoderCache(*children)
    cache.is_updated = dict(context)
    return cache


def flatten_encoder_decoder_with_keys(cache: Any) -> tuple[list[tuple[Any, Any]], Any]:
    children, context = flatten_encoder_decoder(cache)
    names = ("self_attention_cache", "cross_attention_cache")
    return [(pytree.GetAttrKey(n), c) for n, c in zip(names, children, strict=True)], context


def _cache_classes() -> list[tuple[type, Any, Any, Any]]:
    """Every (class, flatten, unflatten, flatten_with_keys) to register, found by
    walking the class hierarchy so that subclasses added by a new release are included."""
    from transformers import cache_utils

    from diag.helpers.cache_helper import is_key_value_layer

    def subclasses(cls: type) -> list[type]:
        out = [cls]
        for sub in cls.__subclasses__():
            out.extend(subclasses(sub))
        return out

    found: list[tuple[type, Any, Any, Any]] = []
    for root in ("DynamicCache", "StaticCache"):
        cls = getattr(cache_utils, root, None)
        if cls is not None:
            found.extend(
                (c, flatten_cache, unflatten_cache, flatten_cache_with_keys)
                for c in subclasses(cls)
            )
    for root in ("DynamicLayer", "StaticLayer"):
        cls = getattr(cache_utils, root, None)
        if cls is None:
            continue
        for c in subclasses(cls):
            # layers that keep more state than keys/values (quantized, indexed, linear attention)
            # cannot round-trip through [keys, values]: leave them out
            if c.__module__ == cache_utils.__name__ and not is_key_value_layer(c):
                continue
            found.append((c, flatten_layer, unflatten_layer, flatten_layer_with_keys))
    enc = getattr(cache_utils, "EncoderDecoderCache", None)
    if enc is not None:
        found.append(
            (
                enc,
                flatten_encoder_decoder,
                unflatten_encoder_decoder,
                flatten_encoder_decoder_with_keys,
            )
        )
    # dedupe while keeping order (a class reachable from two roots)
    seen: set[type] = set()
    return [f for f in found if not (f[0] in seen or seen.add(f[0]))]


# registrations of transformers' own exporter that diag's replaced for the time of its
# export: class -> their Python pytree registration, put back by unregister_cache_pytrees
_REPLACED: dict[type, tuple[Any, Any]] = {}


def _replaceable(cls: type) -> bool:
    # transformers' exporter registers every Cache subclass for the rest of the process,
    # with a flattening of its own (more leaves per sliding layer than diag's dynamic
    # shapes say: torch.export's "Node arity mismatch"); any other registration is the
    # user's and is kept
    from diag.compat.transformers_api import registered_by_transformers_exporter

    return registered_by_transformers_exporter(pytree.SUPPORTED_NODES[cls].flatten_fn)


def register_cache_pytrees(verbose: int = 0) -> list[type]:
    """Registers the cache classes of transformers as pytree nodes, in every pytree
    registry torch keeps (:mod:`diag.compat.torch_pytree`).

    Classes already registered by the user or another library are left as they are and
    not returned, except the registrations of transformers' own exporter
    (``transformers.exporters``), which are set aside in the Python pytree (the one
    ``torch.export`` flattens with), replaced by diag's, and put back by
    :func:`unregister_cache_pytrees`. Returns the classes this call registered, to
    give to :func:`unregister_cache_pytrees`.
    """
    done: list[type] = []
    for cls, flatten, unflatten, with_keys in _cache_classes():
        name = f"{cls.__module__}.{cls.__qualname__}"
        if cls in pytree.SUPPORTED_NODES:
            if not _replaceable(cls):
                if verbose:
                    print(f"[torch_export_patches] {cls.__name__} is already a pytree node: kept as is")
                continue
            _REPLACED[cls] = torch_pytree.python_registration(cls)
            torch_pytree.replace_python_registration(
                cls, flatten, unflatten, serialized_type_name=name, flatten_with_keys_fn=with_keys
            )
            if verbose:
                print(f"[torch_export_patches] {cls.__name__}: transformers' exporter's node set aside")
        else:
            pytree.register_pytree_node(
                cls, flatten, unflatten, serialized_type_name=name, flatten_with_keys_fn=with_keys
            )
        done.append(cls)
    if verbose and done:
        print(f"[torch_export_patches] pytree nodes: {', '.join(c.__name__ for c in done)}")
    return done


def unregister_cache_pytrees(classes: list[type]) -> None:
    """Removes the pytree registrations made by :func:`register_cache_pytrees`, from
    every registry that holds them (the Python pytree, optree's when installed), and
    puts back those of transformers' exporter it replaced."""
    for cls in classes:
        if cls in _REPLACED:
            torch_pytree.restore_python_registration(cls, _REPLACED.pop(cls))
        else:
            torch_pytree.deregister_pytree_node(cls)


__all__ = [
    "flatten_cache",
    "register_cache_pytrees",
    "unflatten_cache",
    "unregister_cache_pytrees",
]
