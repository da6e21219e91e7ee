"""The inputs :func:`diag.export.validate_causal_lm` checks an export on: the shapes
of each input set (:class:`InputSet`), a step's inputs of any shape built for the
torch model (:func:`make_step_inputs`), the same as ONNX Runtime feeds
(:func:`step_feeds`), and the torch side's outputs on them (:func:`run_torch`).

Example::

    >>> [s.name for s in DEFAULT_INPUT_SETS]
    ['prefill', 'decode', 'left_padding', 'prefill_left_padding']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diag import contract
from diag.compat.transformers_api import (
    cache_input,
    cache_input_name,
    output_cache,
    require_cache_argument,
)
from diag.contract.feeds import step_feeds as graph_feeds
from diag.contract.positions import position_ids

if TYPE_CHECKING:
    from diag.models.cache_layout import CacheLayout


@dataclass(frozen=True)
class InputSet:
    """Shape of one validation input set."""

    name: str
    batch: int
    seq: int
    past: int
    left_padding: int = 0  # zeros at the start of the first row's attention_mask


DEFAULT_INPUT_SETS: tuple[InputSet, ...] = (
    InputSet("prefill", batch=3, seq=7, past=0),
    InputSet("decode", batch=1, seq=1, past=9),
    InputSet("left_padding", batch=2, seq=4, past=6, left_padding=3),
    InputSet("prefill_left_padding", batch=2, seq=6, past=0, left_padding=2),
)


def make_step_inputs(
    model: torch.nn.Module,
    batch: int,
    seq: int,
    past: int,
    left_padding: int = 0,
    with_position_ids: bool = True,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    with_full_past: bool = False,
    layout: CacheLayout | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Inputs of one step of ``model`` of any shape, ``past`` may be 0, the first row
    may be left-padded: ``input_ids``, ``attention_mask``, ``position_ids`` (positions
    of the real tokens) and the cache (a DynamicCache built like the model builds it, under the
    forward's cache argument: ``cache`` from transformers 5.24 on, ``past_key_values``
    before; of the shapes of its own cache:
    :func:`diag.models.cache_layout.cache_layout`, or ``layout`` when given; ``dtype``
    None: the cache's dtype).

    A sliding-window layer of that cache keeps only its last ``sliding_window - 1``
    positions, whereas the exported model takes (and returns) the whole past:
    ``with_full_past=True`` also returns the ``(key, value)`` pairs of every layer
    uncut, the past to feed ONNX Runtime."""
    # imported here, as below: they import transformers, which `import diag.export` skips
    from diag.helpers.cache_helper import make_dynamic_cache
    from diag.models.cache_layout import cache_layout

    if left_padding >= past + seq:
        raise ValueError(
            f"left_padding={left_padding} leaves no real token in {past + seq} positions"
        )
    if layout is None:
        layout = cache_layout(model)
    gen = torch.Generator().manual_seed(seed)
    pairs = layout.random_pairs(batch, past, generator=gen, dtype=dtype)
    mask = torch.ones((batch, past + seq), dtype=torch.int64)
    mask[0, :left_padding] = 0
    inputs: dict[str, Any] = {
        contract.INPUT_IDS: torch.randint(0, layout.vocab_size, (batch, seq), generator=gen),
        contract.ATTENTION_MASK: mask,
    }
    if with_position_ids:
        inputs[contract.POSITION_IDS] = position_ids(mask, new=seq).contiguous()
    inputs[require_cache_argument(model, "make_step_inputs")] = make_dynamic_cache(
        pairs, config=model.config
    )
    return (inputs, pairs) if with_full_past else inputs


def step_feeds(
    inputs: dict[str, Any], input_names: Sequence[str], full_past: Sequence[Any] | None = None
) -> dict[str, np.ndarray]:
    """The ONNX Runtime feeds (:func:`diag.contract.feeds.step_feeds`) of the step
    ``inputs`` (of :func:`make_step_inputs`, or the export's dummy inputs) for a graph
    taking ``input_names``; a graph that takes ``logits_to_keep`` computes the positions
    ``inputs`` keep, every position when they keep none (the torch side then returns
    every position's logits too)."""
    from diag.helpers.cache_helper import cache_to_list

    # the cache's sliding layers hold the window only; the ONNX model wants the whole past
    pairs = cache_to_list(cache_input(inputs)) if full_past is None else full_past
    return graph_feeds(
        dict.fromkeys(input_names),
        inputs[contract.INPUT_IDS],
        inputs[contract.ATTENTION_MASK],
        inputs.get(contract.POSITION_IDS),
        cache=[t for pair in pairs for t in pair],
        logits_to_keep=inputs.get(contract.LOGITS_TO_KEEP),
        complete=True,
    )


def run_torch(model: torch.nn.Module, inputs: dict[str, Any], dtype: torch.dtype | None = None):
    """``(logits, [present keys], [present values])`` of ``model`` on a copy of ``inputs``
    (the cache cast to ``dtype`` when given)."""
    import copy

    from diag.helpers.cache_helper import cache_to_list, map_cache_tensors

    device = next(model.parameters()).device
    torch_inputs = copy.copy(inputs)
    for k in (
        contract.INPUT_IDS,
        contract.ATTENTION_MASK,
        contract.POSITION_IDS,
        contract.LOGITS_TO_KEEP,
    ):
        if k in torch_inputs:
            torch_inputs[k] = torch_inputs[k].to(device)
    # under the model's own name, whichever the inputs used
    torch_inputs.pop(cache_input_name(inputs), None)
    torch_inputs[require_cache_argument(model, "validate_causal_lm")] = map_cache_tensors(
        cache_input(inputs), lambda t, _: t.to(device=device, dtype=dtype or t.dtype)
    )
    with torch.no_grad():
        out = model(**torch_inputs, use_cache=True)
    present = cache_to_list(output_cache(out))
    return out.logits, [k for k, _ in present], [v for _, v in present]
