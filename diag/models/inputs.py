"""Dummy inputs for a decoder-only causal LM, shaped for :func:`torch.export.export`.

A decoding step of a causal LM takes ``input_ids`` ``[batch, seq]``, an
``attention_mask`` ``[batch, past + seq]``, ``position_ids`` ``[batch, seq]`` and the
key/value cache of the previous tokens (one ``[batch, kv_heads, past, head_dim]`` key
and value per layer). :func:`make_dummy_inputs` builds such inputs for any decoder
model, with the matching ``dynamic_shapes``; the cache's shapes (layers, heads, head
sizes, layer classes) come from the model's own cache
(:func:`diag.models.cache_layout.cache_layout`), never from the names of config
attributes, which not every architecture uses for its cache.

Every dynamic dimension gets a distinct value (``batch``, ``seq``, ``past`` and
``past + seq`` all differ, none is 1, none equals a static dimension such as the number
of key/value heads or the head size): :func:`torch.export.export` infers equalities
and specialisations from the example values, so two dimensions that happen to be
equal in the example could be merged into one, and a dimension of 1 becomes the
constant 1.

Example::

    >>> from diag.models import make_dummy_inputs
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
    ...                   num_key_value_heads=4, head_dim=16, vocab_size=100)
    >>> inputs, ds = make_dummy_inputs(LlamaForCausalLM(cfg))
    >>> inputs["input_ids"].shape, inputs["attention_mask"].shape
    (torch.Size([2, 3]), torch.Size([2, 8]))
    >>> len(ds[cache_argument(LlamaForCausalLM)])  # key_0, value_0, key_1, value_1
    4
"""

from __future__ import annotations

from typing import Any

import torch

from diag.compat.transformers_api import cache_argument
from diag.contract import DIM_BATCH, DIM_PAST, DIM_SEQ
from diag.helpers.cache_helper import make_dynamic_cache
from diag.models.cache_layout import CacheLayout, cache_layout

# preferred example values of the dynamic dimensions (batch, seq, past); bumped when
# they collide with a static dimension of the model
_DEFAULT_DIMS = (2, 3, 5)


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


def _check_dims(batch: int, seq: int, past: int, static: dict[int, str]) -> None:
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
    for name, value in values.items():
        if value in static:
            raise ValueError(
                f"make_dummy_inputs: {name}={value} equals the cache's {static[value]}; "
                "pick another value (or leave it to None to choose one) so that "
                "torch.export keeps the dimension dynamic."
            )


def make_dummy_inputs(
    model: torch.nn.Module,
    batch: int | None = None,
    seq: int | None = None,
    past: int | None = None,
    dtype: torch.dtype | None = None,
    with_position_ids: bool = True,
    seed: int | None = 0,
    layout: CacheLayout | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Builds the inputs of one decoding step with a non-empty cache, and the
    ``dynamic_shapes`` to export a model with them.

    :param model: the causal LM (``AutoModelForCausalLM``); the shapes of its cache are
        read from one forward of two tokens (:func:`~diag.models.cache_layout.cache_layout`)
    :param batch: batch size; None picks 2 (or the next value that keeps every dynamic
        dimension distinct from the others and from the cache's static dimensions)
    :param seq: number of new tokens; None picks 3 (or the next suitable value)
    :param past: number of cached tokens; None picks 5 (or the next suitable value)
    :param dtype: dtype of the cache tensors; None: the dtype of the model's cache
    :param with_position_ids: adds ``position_ids`` = ``arange(past, past + seq)``
    :param seed: seed of the random tokens and cache values (None: global RNG)
    :param layout: the model's :class:`~diag.models.cache_layout.CacheLayout` when the
        caller already has it (skips the forward)
    :return: ``(inputs, dynamic_shapes)``; ``inputs`` holds ``input_ids``,
        ``attention_mask`` (all ones), ``position_ids`` and the cache (a
        :class:`transformers.DynamicCache` with the layer classes of the model's own,
        under the name the forward takes it: ``cache_argument(model)``);
        ``dynamic_shapes`` maps the same keys to :class:`torch.export.Dim` s named
        ``batch``, ``seq_length``, ``past_length`` (the mask's second dimension is
        ``past_length + seq_length``, left to ``Dim.DYNAMIC`` so export infers the
        relation), and the cache to a flat list of ``2 * num_layers`` dicts in the
        order key_0, value_0, key_1, ...

    Explicit values that collide (two dynamic dimensions equal, a dimension < 2 or
    equal to a number of heads or a head size of the cache) raise a ValueError.

    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> cfg = AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=64,
    ...     num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100)
    >>> model = AutoModelForCausalLM.from_config(cfg)
    >>> inputs, ds = make_dummy_inputs(model)  # batch 2 collides with kv heads: bumped
    >>> tuple(inputs["input_ids"].shape), inputs[cache_argument(model)].get_seq_length()
    ((3, 4), 5)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"make_dummy_inputs expects the model (a torch causal LM), got "
            f"{type(model).__name__}: the shapes of the cache are read from the model, not "
            "from its config, whose attribute names not every architecture uses for its "
            "cache. Pass `model`, not `model.config`."
        )
    cache_name = cache_argument(model)
    if cache_name is None:
        raise TypeError(
            f"{type(model).__name__}.forward takes no key/value cache: make_dummy_inputs "
            "builds the inputs of decoder-only causal LMs (AutoModelForCausalLM)."
        )
    if layout is None:
        layout = cache_layout(model)
    static = layout.static_dims()
    batch, seq, past = _pick_dims(batch, seq, past, set(static))
    _check_dims(batch, seq, past, static)

    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, layout.vocab_size, (batch, seq), generator=generator)
    pairs = layout.random_pairs(batch, past, generator=generator, dtype=dtype)
    inputs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.ones((batch, past + seq), dtype=torch.int64),
    }
    if with_position_ids:
        inputs["position_ids"] = (
            torch.arange(past, past + seq, dtype=torch.int64).expand(batch, seq).contiguous()
        )
    inputs[cache_name] = make_dynamic_cache(pairs, config=model.config)

    d_batch = torch.export.Dim(DIM_BATCH, min=1, max=1024)
    d_seq = torch.export.Dim(DIM_SEQ, min=1, max=8192)
    d_past = torch.export.Dim(DIM_PAST, min=1, max=8192)
    dynamic_shapes: dict[str, Any] = {
        "input_ids": {0: d_batch, 1: d_seq},
        # past + seq: a sum of two Dims is not a valid derived Dim, export infers it
        "attention_mask": {0: d_batch, 1: torch.export.Dim.DYNAMIC},
    }
    if with_position_ids:
        dynamic_shapes["position_ids"] = {0: d_batch, 1: d_seq}
    dynamic_shapes[cache_name] = [{0: d_batch, 2: d_past} for _ in range(2 * layout.num_layers)]
    return inputs, dynamic_shapes


__all__ = ["make_dummy_inputs"]
