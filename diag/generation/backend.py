"""What a backend is: something that runs one step of a causal LM.

The decoding loop (:mod:`diag.generation.decoding`) is shared by every backend.
It owns the token choice, the attention mask, the position ids and the stop
bookkeeping; a backend only turns ``(input_ids, attention_mask, position_ids,
past)`` into ``(logits, past)``. ``past`` is opaque to the loop: a
``DynamicCache`` for torch, OrtValues kept on the device for ONNX Runtime. It is
``None`` on the first call (the prefill).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class StepBackend(Protocol):
    """One forward step of a causal LM.

    Example (the torch backend)::

        backend = TorchBackend(model)
        logits, past = backend(input_ids, attention_mask, position_ids, None)  # prefill
        logits, past = backend(next_ids, attention_mask, position_ids, past)   # decode
    """

    #: size of the vocabulary (last dimension of the logits)
    vocab_size: int

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: Any | None,
    ) -> tuple[torch.Tensor, Any]:
        """Runs the model on ``input_ids`` ``[batch, seq]``.

        ``attention_mask`` is ``[batch, past + seq]``, ``position_ids`` ``[batch, seq]``.
        Returns the float32 logits of the last position ``[batch, vocab]`` (a torch
        tensor on the CPU) and the new past.
        """
        ...
