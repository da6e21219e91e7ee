"""The position ids of the contract: the rule the generation loop, the export's
validation and the diagnosis feed a step with.

A left-padded row counts its real tokens from 0 (``cumsum - 1`` of the mask, the way
``model.generate`` computes them); its padded slots get position 0 (never attended).
A step of ``new`` tokens after a past takes the last ``new`` positions of the whole
mask; the loop then adds 1 per generated token.

>>> import torch
>>> position_ids(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
[[0, 0, 0, 1, 2]]
>>> position_ids(torch.tensor([[0, 1, 1, 1]]), new=1).tolist()
[[2]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the contract is read without torch (diag.export imports it)
    import torch


def position_ids(attention_mask: torch.Tensor, new: int | None = None) -> torch.Tensor:
    """The int64 position ids of ``attention_mask`` ``[batch, past + seq]``: of every
    position, or of the last ``new`` ones (the tokens a step feeds after its past)."""
    positions = attention_mask.long().cumsum(-1) - 1
    # padded slots would be -1; transformers sets them to 0
    positions = positions.masked_fill(attention_mask == 0, 0)
    return positions if new is None else positions[:, positions.shape[1] - new :]


__all__ = ["position_ids"]
