"""Which positions' logits a step computes: the ``logits_to_keep`` input of diag's
exports, and the one place that says what to feed it.

A prefill of ``seq`` positions projects the hidden state of each position onto the
vocabulary (the ``lm_head``), but generation reads only the last row: for SmolLM2 at
1637 positions that is a fifth of the prefill's multiply-adds and 322 MB of logits
for one 196 KB row. The graphs :func:`diag.export_causal_lm` writes therefore take
``logits_to_keep`` (int64, 1-D, dynamic length): the positions of the step, from 0 to
``seq - 1``, whose logits they compute; the logits are ``[batch, len(logits_to_keep),
vocab]``.

Why this form: it is transformers' own. A causal LM's forward takes
``logits_to_keep`` as an int (the last ``n`` positions, 0 for all) or as a 1-D tensor
of positions (``hidden_states[:, logits_to_keep, :]``, on transformers 4.57 as on 5.x);
the tensor form traces into one ``Gather`` before the ``lm_head`` product, keeps its
length dynamic, and says both what generation asks (:func:`last_position`) and what
the diagnosis tools ask (:func:`every_position`) with the same graph. An int would
be a constant of the traced graph.

Who feeds what:

* :class:`diag.ort.backend.OrtBackend` (generation, teacher forcing): the last
  position of each step, ``[seq - 1]`` for the prefill, ``[0]`` for a decode step;
* the tools that compare every position with torch (export validation,
  :func:`diag.diagnose.localize_layer`): :func:`keep_every_position`.

Graphs without the input (other tools' files, diag exports of models whose forward
has no ``logits_to_keep``, diag exports older than the input) compute every position;
their layout says so (``Layout.logits_to_keep`` is None) and nothing is fed.

Example::

    >>> every_position(4).tolist(), last_position(4).tolist()
    ([0, 1, 2, 3], [3])
    >>> import numpy as np
    >>> feeds = {"input_ids": np.zeros((2, 5), dtype=np.int64)}
    >>> keep_every_position(feeds, ["input_ids", "logits_to_keep"])["logits_to_keep"].tolist()
    [0, 1, 2, 3, 4]
    >>> list(keep_every_position({"input_ids": feeds["input_ids"]}, ["input_ids"]))  # no such input
    ['input_ids']
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

import numpy as np

from diag.contract.names import INPUT_IDS, LOGITS_TO_KEEP


def every_position(seq_length: int) -> np.ndarray:
    """``logits_to_keep`` for the logits of every position of a step of ``seq_length``."""
    return np.arange(int(seq_length), dtype=np.int64)


def last_position(seq_length: int) -> np.ndarray:
    """``logits_to_keep`` for the logits of the last position only (what generation
    reads): ``[seq_length - 1]``."""
    if seq_length < 1:
        raise ValueError(f"a step has at least one position, got seq_length={seq_length}.")
    return np.array([int(seq_length) - 1], dtype=np.int64)


def keep_every_position(
    feeds: MutableMapping[str, Any], input_names: Iterable[str]
) -> MutableMapping[str, Any]:
    """Adds ``logits_to_keep`` = every position of the step to ``feeds`` (numpy, with
    ``input_ids``) when the graph takes it (``input_names``) and the caller did not set
    it; returns ``feeds``."""
    if LOGITS_TO_KEEP in set(input_names) and LOGITS_TO_KEEP not in feeds:
        feeds[LOGITS_TO_KEEP] = every_position(feeds[INPUT_IDS].shape[1])
    return feeds


__all__ = ["every_position", "keep_every_position", "last_position"]
