"""The feeds of one ONNX step: the ids, mask, positions, ``logits_to_keep``, the write
positions of a static cache and the cache tensors, by the names of a
:class:`~diag.contract.layout.Layout`, each as the numpy array of the graph input's
type. The ONNX Runtime backend, export's validation and the layer diagnosis build
their feeds here (export may not import :mod:`diag.ort`, so the rule lives in the
contract).

>>> import numpy as np
>>> feeds = step_feeds({"input_ids": np.int64, "attention_mask": np.int64,
...                     "logits_to_keep": np.int64},
...                    np.array([[4, 5]]), np.array([[0, 1, 1]]), None)
>>> sorted(feeds), feeds["logits_to_keep"].tolist()
(['attention_mask', 'input_ids', 'logits_to_keep'], [0, 1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diag.contract.layout import DIAG_LAYOUT, Layout
from diag.contract.logits_to_keep import every_position


def as_array(value: Any, dtype: Any = None) -> np.ndarray:
    """``value`` (a torch tensor or an array) as a C-contiguous numpy array of ``dtype``
    (None: its own type; a bfloat16 tensor, which numpy lacks, goes through float32).

    >>> as_array(np.array([[1, 2]], dtype=np.int32), np.int64).dtype
    dtype('int64')
    """
    if not isinstance(value, np.ndarray):
        value = value.detach()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.cpu().numpy()
    if (dtype is not None and value.dtype != dtype) or not value.flags.c_contiguous:
        value = np.ascontiguousarray(value, dtype=dtype)
    return value


def static_mask(attention_mask: np.ndarray, max_length: int) -> np.ndarray:
    """The mask ``[batch, total]`` of a step as a static cache takes it: padded with zeros
    to the ``max_length`` positions of the buffers (the positions not written yet).

    >>> static_mask(np.ones((1, 3), np.int64), 5).tolist()
    [[1, 1, 1, 0, 0]]
    """
    batch, total = attention_mask.shape
    if total > max_length:
        raise ValueError(
            f"a step of {total} positions does not fit a static cache of {max_length}: "
            "export with a larger max_length."
        )
    padded = np.zeros((batch, max_length), dtype=attention_mask.dtype)
    padded[:, :total] = attention_mask
    return padded


def write_positions(total: int, seq: int, dtype: Any = np.int64) -> np.ndarray:
    """Where the ``seq`` positions of a step go in a static cache after ``total - seq``
    past positions (``cache_position``): ``total - seq, ..., total - 1``.

    >>> write_positions(5, 2).tolist()
    [3, 4]
    """
    return np.arange(total - seq, total, dtype=dtype)


def step_feeds(
    input_types: Mapping[str, Any],
    input_ids: Any,
    attention_mask: Any,
    position_ids: Any,
    *,
    layout: Layout = DIAG_LAYOUT,
    cache: Sequence[Any] | None = None,
    logits_to_keep: Any = None,
    max_length: int | None = None,
    complete: bool = False,
) -> dict[str, np.ndarray]:
    """The feeds of a step of ``input_ids`` ``[batch, seq]`` for a graph whose inputs are
    ``input_types`` (name to numpy dtype, None: as given), named by ``layout``.

    Inputs the graph does not take are left out. ``logits_to_keep`` (the positions whose
    logits the graph computes) defaults to every position of the step. ``max_length``
    (a static cache, ``layout.cache_position``): the mask is padded with zeros to that
    many positions and ``cache_position`` says where the step's positions go.
    ``cache``: the past tensors, key 0, value 0, key 1... (None: the caller binds the
    cache itself). ``complete``: raises a ValueError naming the graph inputs left
    without a feed; the feeds then follow the graph's order.
    """
    feeds: dict[str, np.ndarray] = {}
    total = int(attention_mask.shape[1]) if attention_mask is not None else None
    if max_length is not None and total is not None:
        attention_mask = static_mask(as_array(attention_mask, np.int64), max_length)
    for name, value in (
        (layout.input_ids, input_ids),
        (layout.attention_mask, attention_mask),
        (layout.position_ids, position_ids),
    ):
        if name and name in input_types and value is not None:
            feeds[name] = as_array(value, input_types[name])
    seq = int(input_ids.shape[1])
    keep = layout.logits_to_keep
    if keep and keep in input_types:
        wanted = every_position(seq) if logits_to_keep is None else logits_to_keep
        feeds[keep] = as_array(wanted, input_types[keep])
    where = layout.cache_position
    if where and where in input_types and total is not None:
        feeds[where] = write_positions(total, seq, input_types[where] or np.int64)
    if cache is not None:
        names = layout.past.names(len(cache) // 2)
        for name, value in zip(names, cache, strict=True):
            feeds[name] = as_array(value, input_types.get(name))
    if not complete:
        return feeds
    missing = [name for name in input_types if name not in feeds]
    if missing:
        raise ValueError(
            f"the ONNX model expects inputs {missing} that this step does not have "
            f"(ids, mask, positions and {len(cache or ())} cache tensors): was it exported "
            "from this model?"
        )
    return {name: feeds[name] for name in input_types}


__all__ = ["as_array", "static_mask", "step_feeds", "write_positions"]
