"""A long prompt's prefill run as several steps of at most :data:`PREFILL_CHUNK` tokens.

ONNX Runtime's CPU ``Attention`` (opset 23) computes the scores of every query
against every key and then masks the later ones out: the causal half of a one-shot
prefill is computed for nothing; in chunks, each block of queries scores only the
keys before it (``bench/bench_attention_kernels.py`` measures both on SmolLM2's shapes).
A chunk attends to the cache of the chunks before it and to itself, as a decode step
of several tokens does, so the graph needs nothing new; the keys, values and logits
come out bit for bit the same as the one-shot prefill's (the same per-row reductions
over the same positions), and the last chunk's logits are the last position's.
The chunks also bound the prefill's logits to ``[batch, chunk, vocab]`` floats.

It applies to diag's own layout only (one graph, left padding: every row's last
token is in the last chunk), not to a prefill + decode pair nor to a right-padded
layout, whose last tokens may lie in any chunk.

Example::

    >>> prefill_chunks(600, 256)
    [(0, 256), (256, 512), (512, 600)]
    >>> prefill_chunks(100, 256), prefill_chunks(600, None)
    ([(0, 100)], [(0, 600)])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diag.contract import Layout

#: tokens per prefill step: chunks of 128 to 512 cost about the same
#: (``bench/bench_attention_kernels.py``); 256 bounds the logits of a step at batch 1
PREFILL_CHUNK = 256


def prefill_chunks(length: int, chunk: int | None) -> list[tuple[int, int]]:
    """The ``(start, end)`` slices of a prompt of ``length`` tokens in steps of at most
    ``chunk`` tokens (one slice when ``chunk`` is None or the prompt fits)."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"prefill_chunk must be a positive number of tokens or None, got {chunk}")
    if chunk is None or length <= chunk:
        return [(0, length)]
    return [(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def can_chunk(layout: Layout) -> bool:
    """Whether a prefill of ``layout`` may run in chunks: one graph that takes the
    cache (no prefill graph), with the padding on the left (or none)."""
    return layout.name == "diag" and not layout.is_pair and layout.padding != "right"


def run_chunked(
    prefill: Callable[..., tuple[torch.Tensor, Any]],
    decode: Callable[..., tuple[torch.Tensor, Any]],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    chunks: list[tuple[int, int]],
) -> tuple[torch.Tensor, Any]:
    """Runs the first of the ``chunks`` of the prompt with ``prefill(ids, mask,
    position_ids)``, each next one with ``decode(ids, mask, position_ids, past)`` on the
    cache of the one before; returns the last step's logits and cache. A chunk sees the
    mask up to its last token."""
    first = chunks[0][1]
    logits, past = prefill(input_ids[:, :first], attention_mask[:, :first], position_ids[:, :first])
    for start, end in chunks[1:]:
        logits, past = decode(
            input_ids[:, start:end], attention_mask[:, :end], position_ids[:, start:end], past
        )
    return logits, past
