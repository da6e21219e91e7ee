"""The ``logits_to_keep`` input of an export: the traced forward takes transformers'
``logits_to_keep`` as a 1-D int64 tensor of dynamic length, so that the graph
computes the logits of the positions it is given only (see
:mod:`diag.contract.logits_to_keep` for why this form and who feeds what).

:func:`add_logits_to_keep` is the one step an export needs: it adds the example
tensor to the traced forward's keyword inputs and its dimension to the dynamic
shapes, before ``torch.export``; the input then comes last in the graph (it is the
forward's last keyword), named :data:`diag.contract.LOGITS_TO_KEEP`. A model whose
forward has no such argument is exported without it, and its file's layout says so
(``Layout.logits_to_keep`` None: every position computed).

transformers writes ``hidden_states[:, logits_to_keep, :]``, which the dynamo exporter
translates into ``Transpose -> GatherND -> Transpose``;
:mod:`diag.export.make.rewrite.gather_positions` turns it into one ``Gather(axis=1)``
before the ``lm_head`` product.

Example::

    >>> import torch
    >>> from diag.models import get_untrained_model_with_inputs, make_dummy_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> inputs, ds = make_dummy_inputs(model)
    >>> add_logits_to_keep(model, inputs, ds)
    True
    >>> inputs["logits_to_keep"].tolist(), ds["logits_to_keep"][0].__name__
    ([0, 1, 2, 0, 1, 2], 'keep_length')
    >>> model(**inputs).logits.shape[1]
    6
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch

from diag import contract
from diag.export.plan.model import LOGITS_TO_KEEP_ARGUMENT, takes_logits_to_keep


def _sizes(value: Any) -> set[int]:
    """Every dimension of the tensors in ``value`` (a tensor, a cache, a sequence)."""
    from diag.helpers.cache_helper import cache_to_list, is_cache

    if isinstance(value, torch.Tensor):
        return set(value.shape)
    if is_cache(value):
        return {d for pair in cache_to_list(value) for t in pair if t is not None for d in t.shape}
    if isinstance(value, (list, tuple)):
        return {d for v in value for d in _sizes(v)}
    return set()


def example_positions(seq_length: int, taken: set[int]) -> torch.Tensor:
    """The example ``logits_to_keep`` of a trace: positions ``0, 1, ...`` cycling over
    the step's ``seq_length`` positions, of a length > ``seq_length`` outside ``taken``
    (torch.export keeps a dimension dynamic only when its example value is > 1 and
    equals no other; repeated positions are valid indices).

    >>> example_positions(3, {2, 3, 4, 5}).tolist()
    [0, 1, 2, 0, 1, 2]
    """
    length = seq_length + 1
    while length in taken:
        length += 1
    return torch.arange(length, dtype=torch.int64) % seq_length


def add_logits_to_keep(
    model: Any, inputs: MutableMapping[str, Any], dynamic_shapes: MutableMapping[str, Any]
) -> bool:
    """Adds ``logits_to_keep`` to the keyword ``inputs`` of a trace of ``model`` (a 1-D
    int64 tensor, see :func:`example_positions`) and its dynamic dimension
    (:data:`diag.contract.DIM_KEEP`) to ``dynamic_shapes``, in place, when the forward
    takes it; returns whether it did.

    ``inputs`` must hold ``input_ids`` ``[batch, seq]``; the example's length differs
    from every dimension of the other inputs (the cache's included). Call it on the
    inputs of any layout (dynamic or static cache), after they are built and before
    ``torch.export``; name the graph input :data:`diag.contract.LOGITS_TO_KEEP` (it is
    the last one).
    """
    if not takes_logits_to_keep(model):
        return False
    if contract.INPUT_IDS not in inputs:
        raise ValueError("add_logits_to_keep needs the trace's input_ids [batch, seq] in inputs.")
    seq_length = int(inputs[contract.INPUT_IDS].shape[1])
    taken = set().union(*(_sizes(v) for v in inputs.values()))
    positions = example_positions(seq_length, taken)
    device = inputs[contract.INPUT_IDS].device
    inputs[LOGITS_TO_KEEP_ARGUMENT] = positions.to(device)
    dynamic_shapes[LOGITS_TO_KEEP_ARGUMENT] = {
        0: torch.export.Dim(contract.DIM_KEEP, min=1, max=8192)
    }
    return True


__all__ = ["add_logits_to_keep", "example_positions"]
