"""The shapes of a causal LM's key/value cache, read from the model itself.

A decoder's cache holds, for each layer, a key and a value tensor of shape
``[batch, kv_heads, length, head_dim]``. How many heads and which head size is not
something the config tells reliably: falcon with ``multi_query=True`` keeps one head
while its ``num_kv_heads`` says all of them, gpt_bigcode reads a ``multi_query`` flag,
deepseek's multi-head latent attention caches a compressed latent whose size is no
``head_dim`` of the config, and any config may carry a ``num_key_value_heads`` its
model never reads. :func:`cache_layout` therefore runs the model once on two tokens
(``use_cache=True``, under :class:`torch.no_grad`) and reads the cache it returns:
the number of layers, each layer's heads, key size and value size, the layer class,
the dtype, and the vocabulary size from the logits.

Every part of diag that builds a cache or a past of its own (the dummy inputs of the
export, the validation's input sets, the diagnosis' empty past) takes its shapes from
here.

Example::

    >>> from diag.models.untrained import get_tiny_config, make_untrained_model
    >>> layout = cache_layout(make_untrained_model(get_tiny_config("falcon")))
    >>> layout.num_layers, layout.layers[0].kv_heads  # multi-query: one head
    (2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diag.compat.transformers_api import output_cache, require_cache_argument
from diag.helpers.cache_helper import cache_layers_for_config, is_key_value_layer

#: the tokens of the probing forward: two, so that no dimension of 1 hides a broadcast
_PROBE_LENGTH = 2


class UnsupportedCacheError(ValueError):
    """The model's cache is not one diag can build and export: not a list of layers
    each holding a ``[batch, kv_heads, length, head_dim]`` key and value."""


@dataclass(frozen=True)
class LayerLayout:
    """One layer of the cache: ``keys`` are ``[batch, kv_heads, length, head_dim]``,
    ``values`` ``[batch, kv_heads, length, value_head_dim]``; ``kind`` is the layer
    class (``"DynamicLayer"``, ``"DynamicSlidingWindowLayer"``)."""

    kv_heads: int
    head_dim: int
    value_head_dim: int
    kind: str

    def key_shape(self, batch: int, length: int) -> tuple[int, int, int, int]:
        return (batch, self.kv_heads, length, self.head_dim)

    def value_shape(self, batch: int, length: int) -> tuple[int, int, int, int]:
        return (batch, self.kv_heads, length, self.value_head_dim)


@dataclass(frozen=True)
class CacheLayout:
    """What :func:`cache_layout` read from a model: one :class:`LayerLayout` per cache
    layer, the dtype of the cache tensors and the vocabulary size of the logits."""

    layers: tuple[LayerLayout, ...]
    dtype: torch.dtype
    vocab_size: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def static_dims(self) -> dict[int, str]:
        """Every static size of the cache (heads, key and value sizes of each layer),
        mapped to a description of where it occurs first, e.g. ``{4: "kv_heads of
        layer 0", 16: "head_dim of layer 0"}``: the dynamic dimensions of example
        inputs must avoid them (:func:`diag.models.make_dummy_inputs`)."""
        found: dict[int, str] = {}
        for i, layer in enumerate(self.layers):
            for name in ("kv_heads", "head_dim", "value_head_dim"):
                found.setdefault(getattr(layer, name), f"{name} of layer {i}")
        return found

    def random_pairs(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One random ``(key, value)`` pair per layer, ``length`` cached positions
        (0 gives empty tensors), drawn key then value, layer after layer, in float32
        then cast to ``dtype`` (None: :attr:`dtype`) so that a seed gives the same
        values in every dtype."""
        dtype = dtype or self.dtype
        return [
            (
                torch.randn(layer.key_shape(batch, length), generator=generator).to(dtype),
                torch.randn(layer.value_shape(batch, length), generator=generator).to(dtype),
            )
            for layer in self.layers
        ]


def _layer_layout(model: torch.nn.Module, i: int, layer: object) -> LayerLayout:
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    name = type(model).__name__
    if not is_key_value_layer(type(layer)):
        raise UnsupportedCacheError(
            f"{name}: layer {i} of its cache is a {type(layer).__name__}, which keeps state "
            "besides its keys and values (linear attention, a state-space or convolution "
            "state, quantized or indexed tensors); diag exports and drives caches of "
            "key/value layers only."
        )
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise UnsupportedCacheError(
            f"{name}: layer {i} of its cache is a {type(layer).__name__} holding no key/value "
            "tensors (a recurrent, linear-attention or state-space layer, or a layer sharing "
            "another's cache); diag exports and drives caches of key/value layers only."
        )
    if keys.dim() != 4 or values.dim() != 4 or keys.shape[:3] != values.shape[:3]:
        raise UnsupportedCacheError(
            f"{name}: layer {i} of its cache holds keys {tuple(keys.shape)} and values "
            f"{tuple(values.shape)}, not [batch, kv_heads, length, head_dim] tensors that "
            "agree on batch, heads and length; diag cannot build or export such a cache."
        )
    return LayerLayout(
        kv_heads=int(keys.shape[1]),
        head_dim=int(keys.shape[3]),
        value_head_dim=int(values.shape[3]),
        kind=type(layer).__name__,
    )


def cache_layout(model: torch.nn.Module) -> CacheLayout:
    """Reads the layout of ``model``'s key/value cache from one forward of two tokens.

    :param model: a causal LM of transformers (``AutoModelForCausalLM``); it is run
        once in eval mode under :class:`torch.no_grad`, on its own device, and left in
        the mode it was in
    :return: a :class:`CacheLayout`
    :raises UnsupportedCacheError: when the cache is not made of key/value layers
        (mamba, jamba, recurrent_gemma...) or its layers are not those
        :func:`diag.helpers.cache_helper.make_dynamic_cache` builds from the config (a cache the model
        builds its own way): the message names the layer and the reason

    >>> from diag.models.untrained import get_tiny_config, make_untrained_model
    >>> layout = cache_layout(make_untrained_model(get_tiny_config("gemma2")))
    >>> [(layer.kv_heads, layer.head_dim, layer.kind) for layer in layout.layers]
    [(4, 16, 'DynamicSlidingWindowLayer'), (4, 16, 'DynamicLayer')]
    """
    require_cache_argument(model, "cache_layout")
    name = type(model).__name__
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    ids = torch.zeros((1, _PROBE_LENGTH), dtype=torch.int64, device=device)
    was_training = model.training
    # eval: a model in training mode may turn its cache off (gradient checkpointing)
    model.eval()
    try:
        with torch.no_grad():
            output = model(input_ids=ids, use_cache=True)
    finally:
        model.train(was_training)
    cache = output_cache(output)
    if cache is None or not hasattr(cache, "layers"):
        what = "no cache" if cache is None else f"a cache without layers ({type(cache).__name__})"
        raise UnsupportedCacheError(
            f"{name}.forward(use_cache=True) returned {what}; diag needs a transformers "
            "cache made of key/value layers (DynamicCache)."
        )
    layers = tuple(_layer_layout(model, i, layer) for i, layer in enumerate(cache.layers))
    if not layers:
        raise UnsupportedCacheError(f"{name}.forward(use_cache=True) returned an empty cache.")
    # the dummy caches are built from the config (make_dynamic_cache): they must get
    # the layers the model's own forward creates, or the export traces another model
    expected = [type(layer).__name__ for layer in cache_layers_for_config(model.config)]
    if expected != [layer.kind for layer in layers]:
        raise UnsupportedCacheError(
            f"{name} builds a cache of layers {[layer.kind for layer in layers]} whereas "
            f"DynamicCache(config=model.config) gives {expected}: the model builds its cache "
            "its own way, which diag cannot rebuild for the export."
        )
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise UnsupportedCacheError(f"{name}.forward returned no logits; is it a causal LM?")
    return CacheLayout(
        layers=layers,
        dtype=cache.layers[0].keys.dtype,
        vocab_size=int(logits.shape[-1]),
    )


__all__ = ["CacheLayout", "LayerLayout", "UnsupportedCacheError", "cache_layout"]
