"""Dummy inputs for a decoder-only causal LM, shaped for :func:`torch.export.export`.

A decoding step of a causal LM takes ``input_ids`` ``[batch, seq]``, an
``attention_mask`` ``[batch, past + seq]``, ``position_ids`` ``[batch, seq]`` and the
key/value cache of the previous tokens (one ``[batch, kv_heads, past, head_dim]`` key
and value per layer). :func:`make_dummy_inputs` builds such inputs for any decoder
config, with the matching ``dynamic_shapes``.

Every dynamic dimension gets a distinct value (``batch``, ``seq``, ``past`` and
``past + seq`` all differ, none is 1, none equals a static dimension such as the number
of key/value heads or the head size): :func:`torch.export.export` infers equalities
and specialisations from the example values, so two dimensions that happen to be
equal in the example could be merged into one, and a dimension of 1 becomes the
constant 1.

Example::

    >>> from diag.models import make_dummy_inputs
    >>> from transformers import LlamaConfig
    >>> cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
    ...                   num_key_value_heads=4, head_dim=16, vocab_size=100)
    >>> inputs, ds = make_dummy_inputs(cfg)
    >>> inputs["input_ids"].shape, inputs["attention_mask"].shape
    (torch.Size([2, 3]), torch.Size([2, 8]))
    >>> from diag.compat.transformers_api import config_cache_argument
    >>> len(ds[config_cache_argument(cfg)])  # key_0, value_0, key_1, value_1
    4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diag.compat.transformers_api import config_cache_argument
from diag.helpers.cache_helper import make_dynamic_cache

# preferred example values of the dynamic dimensions (batch, seq, past); bumped when
# they collide with a static dimension of the model
_DEFAULT_DIMS = (2, 3, 5)


@dataclass(frozen=True)
class DecoderDims:
    """Static dimensions of a decoder that the key/value cache depends on."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int


def _first_attr(config: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def decoder_dims(config: Any) -> DecoderDims:
    """Reads the number of layers, key/value heads, head size and vocabulary size from
    any decoder config (llama-like names, gpt2's ``n_layer`` / ``n_head`` / ``n_embd``,
    or the text part of a multimodal config).

    >>> from transformers import GPT2Config
    >>> decoder_dims(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=100))
    DecoderDims(num_layers=2, num_kv_heads=4, head_dim=16, vocab_size=100)
    """
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    num_layers = _first_attr(config, ("num_hidden_layers", "n_layer", "num_layers"))
    num_heads = _first_attr(config, ("num_attention_heads", "n_head", "num_heads"))
    hidden = _first_attr(config, ("hidden_size", "n_embd", "d_model"))
    vocab = _first_attr(config, ("vocab_size",))
    if num_layers is None or num_heads is None or vocab is None:
        raise ValueError(
            f"Cannot read the number of layers, attention heads and vocabulary size from "
            f"{type(config).__name__}; make_dummy_inputs expects a decoder config such as "
            "LlamaConfig or GPT2Config (num_hidden_layers / n_layer, num_attention_heads / "
            "n_head, vocab_size)."
        )
    kv_heads = _first_attr(config, ("num_key_value_heads", "n_kv_heads", "multi_query_group_num"))
    head_dim = getattr(config, "head_dim", None)
    if head_dim is None:
        if hidden is None:
            raise ValueError(
                f"{type(config).__name__} has neither head_dim nor hidden_size / n_embd: "
                "cannot infer the shape of the key/value cache."
            )
        head_dim = hidden // num_heads
    return DecoderDims(
        num_layers=int(num_layers),
        num_kv_heads=int(kv_heads if kv_heads is not None else num_heads),
        head_dim=int(head_dim),
        vocab_size=int(vocab),
    )


def _pick_dims(
    batch: int | None, seq: int | None, past: int | None, static: set[int]
) -> tuple[int, int, int]:
    """Fills the missing values with the smallest ones (from the defaults up) that keep
    batch, seq, past and past + seq pairwise distinct, > 1 and outside ``static``."""
    given = {"batch": batch, "seq": seq, "past": past}
    chosen: dict[str, int] = {}
    for (name, value), default in zip(given.items(), _DEFAULT_DIMS, strict=True):
        if value is not None:
            chosen[name] = value
            continue
        candidate = default
        while True:
            used = set(chosen.values()) | {v for v in given.values() if v is not None}
            ok = candidate > 1 and candidate not in static and candidate not in used
            if ok and name == "past":
                s = chosen["seq"]
                ok = candidate + s not in static | used | {candidate}
            if ok:
                break
            candidate += 1
        chosen[name] = candidate
    return chosen["batch"], chosen["seq"], chosen["past"]


def _check_dims(batch: int, seq: int, past: int, dims: DecoderDims) -> None:
    values = {"batch": batch, "seq": seq, "past": past, "past + seq": past + seq}
    for name, value in values.items():
        if not isinstance(value, int) or value < 2:
            raise ValueError(
                f"make_dummy_inputs: {name}={value!r} must be an integer >= 2; torch.export "
                "turns a dimension of 0 or 1 in the example inputs into a constant."
            )
    seen: dict[int, str] = {}
    for name, value in values.items():
        if value in seen:
            raise ValueError(
                f"make_dummy_inputs: {seen[value]} and {name} are both {value}; give distinct "
                "values (e.g. batch=2, seq=3, past=5) or torch.export may merge the two "
                "dimensions into one."
            )
        seen[value] = name
    static = {"num_key_value_heads": dims.num_kv_heads, "head_dim": dims.head_dim}
    for name, value in values.items():
        for sname, svalue in static.items():
            if value == svalue:
                raise ValueError(
                    f"make_dummy_inputs: {name}={value} equals the model's {sname}={svalue}; "
                    "pick another value (or leave it to None to choose one) so that "
                    "torch.export keeps the dimension dynamic."
                )


def make_dummy_inputs(
    config: Any,
    batch: int | None = None,
    seq: int | None = None,
    past: int | None = None,
    dtype: torch.dtype = torch.float32,
    with_position_ids: bool = True,
    seed: int | None = 0,
    cache_name: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Builds the inputs of one decoding step with a non-empty cache, and the
    ``dynamic_shapes`` to export a model with them.

    :param config: a decoder config (``model.config``)
    :param batch: batch size; None picks 2 (or the next value that keeps every dynamic
        dimension distinct from the others and from the model's static dimensions)
    :param seq: number of new tokens; None picks 3 (or the next suitable value)
    :param past: number of cached tokens; None picks 5 (or the next suitable value)
    :param dtype: dtype of the cache tensors (the model's dtype)
    :param with_position_ids: adds ``position_ids`` = ``arange(past, past + seq)``
    :param seed: seed of the random tokens and cache values (None: global RNG)
    :param cache_name: the key of the cache, the forward's cache argument
        (:func:`diag.compat.transformers_api.cache_argument` of the model); None takes
        the one of the class transformers builds for ``config``
        (``"cache"`` from transformers 5.24 on, ``"past_key_values"`` before)
    :return: ``(inputs, dynamic_shapes)``; ``inputs`` holds ``input_ids``,
        ``attention_mask`` (all ones), ``position_ids`` and the cache (a
        :class:`transformers.DynamicCache`); ``dynamic_shapes`` maps the same keys to
        :class:`torch.export.Dim` s named ``batch``, ``seq_length``, ``past_length``
        (the mask's second dimension is ``past_length + seq_length``, left to
        ``Dim.DYNAMIC`` so export infers the relation), and the cache to a
        flat list of ``2 * num_layers`` dicts in the order key_0, value_0, key_1, ...

    Explicit values that collide (two dynamic dimensions equal, a dimension < 2 or
    equal to ``num_key_value_heads`` / ``head_dim``) raise a ValueError.

    >>> from transformers import AutoConfig
    >>> cfg = AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=64,
    ...     num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100)
    >>> inputs, ds = make_dummy_inputs(cfg, cache_name="cache")  # batch 2 = kv heads: bumped
    >>> tuple(inputs["input_ids"].shape), inputs["cache"].get_seq_length()
    ((3, 4), 5)
    """
    dims = decoder_dims(config)
    static = {dims.num_kv_heads, dims.head_dim}
    batch, seq, past = _pick_dims(batch, seq, past, static)
    _check_dims(batch, seq, past, dims)

    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, dims.vocab_size, (batch, seq), generator=generator)
    shape = (batch, dims.num_kv_heads, past, dims.head_dim)
    pairs = [
        (
            torch.randn(shape, generator=generator).to(dtype),
            torch.randn(shape, generator=generator).to(dtype),
        )
        for _ in range(dims.num_layers)
    ]
    inputs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.ones((batch, past + seq), dtype=torch.int64),
    }
    if with_position_ids:
        inputs["position_ids"] = (
            torch.arange(past, past + seq, dtype=torch.int64).expand(batch, seq).contiguous()
        )
    cache_name = cache_name or config_cache_argument(config)
    inputs[cache_name] = make_dynamic_cache(pairs, config=config)

    d_batch = torch.export.Dim("batch", min=1, max=1024)
    d_seq = torch.export.Dim("seq_length", min=1, max=8192)
    d_past = torch.export.Dim("past_length", min=1, max=8192)
    dynamic_shapes: dict[str, Any] = {
        "input_ids": {0: d_batch, 1: d_seq},
        # past + seq: a sum of two Dims is not a valid derived Dim, export infers it
        "attention_mask": {0: d_batch, 1: torch.export.Dim.DYNAMIC},
    }
    if with_position_ids:
        dynamic_shapes["position_ids"] = {0: d_batch, 1: d_seq}
    dynamic_shapes[cache_name] = [
        {0: d_batch, 2: d_past} for _ in range(2 * dims.num_layers)
    ]
    return inputs, dynamic_shapes


__all__ = ["DecoderDims", "decoder_dims", "make_dummy_inputs"]
