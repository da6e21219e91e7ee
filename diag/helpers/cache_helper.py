"""Build, read and rebuild the key/value cache classes of transformers (4.57 and 5.x).

In every supported release a cache (:class:`transformers.DynamicCache`,
:class:`transformers.StaticCache`) is a list of *layers* (``cache.layers``), each with
``.keys`` and ``.values`` tensors of shape ``[batch, kv_heads, past, head_dim]``; the
``key_cache`` / ``value_cache`` attributes of older transformers are gone. What
differs between the supported releases (the layers' other attributes and method
signatures) is listed in :mod:`diag.compat.transformers_api`; nothing here depends on it. Sliding-window
layers (gemma2, gemma3, mistral with ``sliding_window``...) are
:class:`transformers.cache_utils.DynamicSlidingWindowLayer` and keep at most
``sliding_window - 1`` positions. An :class:`transformers.EncoderDecoderCache` holds two
such caches.

The helpers here hide those details:

* :func:`make_dynamic_cache` / :func:`make_static_cache` /
  :func:`make_encoder_decoder_cache` build a filled cache from ``(key, value)`` pairs;
* :func:`cache_to_list` reads the pairs back;
* :func:`cache_parts` names the parts of any cache the way :func:`diag.helpers.string_type.string_type`
  and :func:`diag.helpers.max_diff.max_diff` print them (``key_cache`` / ``value_cache``, or the two
  sub-caches of an encoder-decoder cache);
* :func:`map_cache_tensors` returns a copy of a cache of the same class with every
  tensor transformed (what :func:`diag.helpers.torch_helper.to_any` uses).

Example::

    >>> import torch
    >>> from diag.helpers.cache_helper import make_dynamic_cache, cache_to_list
    >>> cache = make_dynamic_cache([(torch.rand(1, 2, 5, 8), torch.rand(1, 2, 5, 8))] * 3)
    >>> cache.get_seq_length(), len(cache_to_list(cache))
    (5, 3)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.cache_utils import (
    Cache,
    DynamicCache,
    EncoderDecoderCache,
    StaticCache,
)

KVPair = tuple[torch.Tensor, torch.Tensor]


def is_cache(obj: Any) -> bool:
    """Tells whether ``obj`` is a transformers cache (any :class:`~transformers.cache_utils.Cache`).

    >>> is_cache(make_dynamic_cache([])), is_cache((1, 2))
    (True, False)
    """
    return isinstance(obj, Cache)


def _check_pairs(pairs: Sequence[KVPair], where: str) -> list[KVPair]:
    if isinstance(pairs, Cache):
        raise TypeError(
            f"{where} expects a list of (key, value) tensor pairs, got a {type(pairs).__name__}; "
            "use cache_to_list(cache) to get its pairs."
        )
    if not isinstance(pairs, (list, tuple)):
        raise TypeError(
            f"{where} expects a list of (key, value) tensor pairs, one per layer, "
            f"got {type(pairs).__name__}."
        )
    checked = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(
                f"{where}: layer {i} must be a (key, value) pair of tensors, got "
                f"{type(pair).__name__}"
                + (f" of length {len(pair)}" if hasattr(pair, "__len__") else "")
            )
        key, value = pair
        if not isinstance(key, torch.Tensor) or not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{where}: layer {i} must hold torch tensors, got "
                f"({type(key).__name__}, {type(value).__name__})."
            )
        if key.dim() != 4 or value.dim() != 4:
            raise ValueError(
                f"{where}: layer {i} tensors must have shape [batch, kv_heads, past, head_dim], "
                f"got key {tuple(key.shape)} and value {tuple(value.shape)}."
            )
        if key.shape[:3] != value.shape[:3]:
            raise ValueError(
                f"{where}: layer {i} key {tuple(key.shape)} and value {tuple(value.shape)} disagree "
                "on batch, kv_heads or past."
            )
        checked.append((key, value))
    return checked


#: words in the names of transformers' cache layer classes that keep more state than
#: their keys and values (quantized, indexed, linear-attention or hybrid layers): such a
#: layer cannot be rebuilt from ``(key, value)`` pairs nor exported as one
_MORE_THAN_KEY_VALUE = ("Quantized", "Indexed", "LinearAttention")


def is_key_value_layer(layer_class: type) -> bool:
    """Whether a cache layer class holds nothing but keys and values (``DynamicLayer``,
    ``DynamicSlidingWindowLayer``, ``StaticLayer``...), so that a list of ``(key,
    value)`` pairs describes it entirely.

    >>> from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
    >>> is_key_value_layer(DynamicLayer), is_key_value_layer(DynamicSlidingWindowLayer)
    (True, True)
    """
    return not any(word in layer_class.__name__ for word in _MORE_THAN_KEY_VALUE)


def cache_layers_for_config(config: Any) -> list[Any]:
    """The empty layers ``DynamicCache(config=config)`` creates, one per layer of the
    text config, of the class the config asks for (what a model's forward starts
    from when given no cache, and what :func:`make_dynamic_cache` fills).

    >>> from transformers import AutoConfig
    >>> cfg = AutoConfig.for_model("gemma2", num_hidden_layers=2, sliding_window=8)
    >>> [type(layer).__name__ for layer in cache_layers_for_config(cfg)]
    ['DynamicSlidingWindowLayer', 'DynamicLayer']
    """
    return list(DynamicCache(config=config).layers)


def make_dynamic_cache(pairs: Sequence[KVPair], config: Any = None) -> DynamicCache:
    """Builds a :class:`transformers.DynamicCache` holding the given per-layer tensors.

    :param pairs: one ``(key, value)`` pair per layer, tensors of shape
        ``[batch, kv_heads, past, head_dim]``; ``past`` may be 0 (empty tensors), which
        gives a cache of length 0 that a model fills on its first forward (the prefill).
    :param config: the model's config; the layer classes then follow it exactly as
        ``model.forward`` would build them (a
        :class:`~transformers.cache_utils.DynamicSlidingWindowLayer` for the
        sliding-window layers of gemma2, gemma3, mistral...), and a sliding layer keeps
        only its last ``sliding_window - 1`` positions while remembering the full
        length. Without it every layer is a plain
        :class:`~transformers.cache_utils.DynamicLayer`.
    :return: the filled cache

    Give the *full* past of every layer, sliding ones included: a sliding layer
    counts the positions it is given to know where the window stands, so a pair
    already cut to the window would make it believe the sequence is shorter. The
    tensors are copied into the cache (transformers concatenates them).

    >>> import torch
    >>> k = torch.zeros(2, 4, 7, 16)
    >>> cache = make_dynamic_cache([(k, k), (k, k)])
    >>> cache.get_seq_length(), [type(layer).__name__ for layer in cache.layers]
    (7, ['DynamicLayer', 'DynamicLayer'])
    """
    pairs = _check_pairs(pairs, "make_dynamic_cache")
    if config is None:
        # DynamicCache(ddp_cache_data) without config creates plain DynamicLayer-s;
        # an empty list would give a cache that grows lazily, which is what we want too
        return DynamicCache(pairs) if pairs else DynamicCache()
    n_layers = len(cache_layers_for_config(config))
    if len(pairs) != n_layers:
        raise ValueError(
            f"make_dynamic_cache: the config describes {n_layers} cache layers but "
            f"{len(pairs)} (key, value) pairs were given; give one pair per layer."
        )
    return DynamicCache(pairs, config=config)


def make_static_cache(pairs: Sequence[KVPair], config: Any, max_cache_len: int) -> StaticCache:
    """Builds a :class:`transformers.StaticCache` of ``max_cache_len`` positions whose
    first ``past`` positions hold the given per-layer tensors.

    >>> import torch
    >>> from transformers import LlamaConfig
    >>> cfg = LlamaConfig(num_hidden_layers=2, num_attention_heads=4,
    ...                   num_key_value_heads=2, hidden_size=32)
    >>> k = torch.rand(1, 2, 3, 8)
    >>> cache = make_static_cache([(k, k), (k, k)], cfg, max_cache_len=10)
    >>> cache.layers[0].keys.shape
    torch.Size([1, 2, 10, 8])
    """
    pairs = _check_pairs(pairs, "make_static_cache")
    if config is None:
        raise ValueError("make_static_cache needs the model config to know the layer types.")
    cache = StaticCache(config=config, max_cache_len=max_cache_len)
    if len(pairs) != len(cache.layers):
        raise ValueError(
            f"make_static_cache: the config describes {len(cache.layers)} cache layers but "
            f"{len(pairs)} (key, value) pairs were given; give one pair per layer."
        )
    for layer, (key, value) in zip(cache.layers, pairs, strict=True):
        if key.shape[2] > max_cache_len:
            raise ValueError(
                f"make_static_cache: past length {key.shape[2]} exceeds max_cache_len={max_cache_len}."
            )
        layer.update(key, value)
    return cache


def make_encoder_decoder_cache(
    self_attention: Sequence[KVPair], cross_attention: Sequence[KVPair]
) -> EncoderDecoderCache:
    """Builds a :class:`transformers.EncoderDecoderCache` from two lists of pairs.

    >>> import torch
    >>> k = torch.rand(1, 2, 3, 8)
    >>> c = make_encoder_decoder_cache([(k, k)], [(k, k)])
    >>> type(c.self_attention_cache).__name__
    'DynamicCache'
    """
    return EncoderDecoderCache(
        make_dynamic_cache(self_attention), make_dynamic_cache(cross_attention)
    )


def _layered(cache: Any, where: str) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(
            f"{where} expects a transformers cache with `.layers` (DynamicCache, StaticCache...), "
            f"got {type(cache).__name__}."
        )
    return layers


def cache_to_list(cache: Any) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Returns the ``(key, value)`` pair of every layer of a cache.

    Works for :class:`~transformers.DynamicCache`, :class:`~transformers.StaticCache`
    and any cache made of layers with ``.keys`` / ``.values``; for an
    :class:`~transformers.EncoderDecoderCache` it returns the pairs of the
    self-attention cache (use :func:`cache_parts` to get both). A layer not filled yet
    (a lazily created or KV-sharing layer) gives ``(None, None)``. The tensors are
    returned as stored, not copied; a :class:`~transformers.StaticCache` layer
    returns its whole preallocated buffer.

    >>> import torch
    >>> k, v = torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4)
    >>> [(a.shape[2], float(b.sum())) for a, b in cache_to_list(make_dynamic_cache([(k, v)]))]
    [(3, 24.0)]
    """
    if isinstance(cache, EncoderDecoderCache):
        return cache_to_list(cache.self_attention_cache)
    return [
        (getattr(layer, "keys", None), getattr(layer, "values", None))
        for layer in _layered(cache, "cache_to_list")
    ]


def cache_parts(cache: Any) -> dict[str, Any]:
    """Names the parts of a cache, in the order :func:`diag.helpers.string_type.string_type` and
    :func:`diag.helpers.max_diff.max_diff` show them.

    * layered caches (DynamicCache, StaticCache...):
      ``{"key_cache": [keys per layer], "value_cache": [values per layer]}``
    * :class:`~transformers.EncoderDecoderCache`:
      ``{"self_attention_cache": cache, "cross_attention_cache": cache}``

    >>> import torch
    >>> k = torch.zeros(1, 2, 3, 4)
    >>> sorted(cache_parts(make_dynamic_cache([(k, k)])))
    ['key_cache', 'value_cache']
    """
    if isinstance(cache, EncoderDecoderCache):
        return {
            "self_attention_cache": cache.self_attention_cache,
            "cross_attention_cache": cache.cross_attention_cache,
        }
    pairs = cache_to_list(cache)
    return {"key_cache": [k for k, _ in pairs], "value_cache": [v for _, v in pairs]}


def cache_leaves(cache: Any, prefix: str = "") -> list[tuple[str, torch.Tensor | None]]:
    """Flattens a cache into ``(path, tensor)`` leaves in the order of the ONNX export
    contract (layer by layer, key then value), e.g.
    ``[("key_cache[0]", k0), ("value_cache[0]", v0), ("key_cache[1]", k1), ...]``.

    >>> import torch
    >>> k = torch.zeros(1, 2, 3, 4)
    >>> [p for p, _ in cache_leaves(make_dynamic_cache([(k, k)] * 2), "past")]
    ['past.key_cache[0]', 'past.value_cache[0]', 'past.key_cache[1]', 'past.value_cache[1]']
    """
    dot = f"{prefix}." if prefix else ""
    if isinstance(cache, EncoderDecoderCache):
        return cache_leaves(
            cache.self_attention_cache, f"{dot}self_attention_cache"
        ) + cache_leaves(cache.cross_attention_cache, f"{dot}cross_attention_cache")
    leaves = []
    for i, (k, v) in enumerate(cache_to_list(cache)):
        leaves.append((f"{dot}key_cache[{i}]", k))
        leaves.append((f"{dot}value_cache[{i}]", v))
    return leaves


def map_cache_tensors(cache: Any, fn: Callable[[torch.Tensor, str], torch.Tensor]) -> Any:
    """Returns a copy of ``cache`` (same class, same layer classes, same sliding windows
    and lengths) where every tensor ``t`` stored in its layers is replaced by
    ``fn(t, name)``; ``name`` is the attribute (``"keys"``, ``"values"``, or bookkeeping
    tensors such as ``"cumulative_length"``) so that ``fn`` may leave the latter alone.
    The original cache is not modified.

    >>> import torch
    >>> k = torch.zeros(1, 2, 3, 4)
    >>> c = map_cache_tensors(make_dynamic_cache([(k, k)]), lambda t, name: t.half())
    >>> c.layers[0].keys.dtype, type(c).__name__
    (torch.float16, 'DynamicCache')
    """
    if isinstance(cache, EncoderDecoderCache):
        new = copy.copy(cache)
        new.self_attention_cache = map_cache_tensors(cache.self_attention_cache, fn)
        new.cross_attention_cache = map_cache_tensors(cache.cross_attention_cache, fn)
        new.is_updated = dict(cache.is_updated)
        return new
    layers = _layered(cache, "map_cache_tensors")
    new = copy.copy(cache)
    new_layers = []
    for layer in layers:
        new_layer = copy.copy(layer)
        for name, value in list(vars(layer).items()):
            if isinstance(value, torch.Tensor):
                setattr(new_layer, name, fn(value, name))
        # layers remember the dtype / device of their keys for later lazy allocations
        keys = getattr(new_layer, "keys", None)
        if isinstance(keys, torch.Tensor):
            if hasattr(new_layer, "dtype"):
                new_layer.dtype = keys.dtype
            if hasattr(new_layer, "device"):
                new_layer.device = keys.device
        new_layers.append(new_layer)
    new.layers = new_layers
    return new


__all__ = [
    "cache_layers_for_config",
    "is_key_value_layer",
    "cache_leaves",
    "cache_parts",
    "cache_to_list",
    "is_cache",
    "make_dynamic_cache",
    "make_encoder_decoder_cache",
    "make_static_cache",
    "map_cache_tensors",
]
