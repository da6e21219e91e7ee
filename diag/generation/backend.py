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

    # Optional: ``input_device``, the torch device where the loop keeps the ids, mask
    # and tokens it passes (the torch backend: the model's). Without it, they stay
    # where the prompt is (the CPU for ONNX Runtime, whose backend copies them).
    #
    # Beam search calls ``reorder(past, rows)`` between two steps (below); a backend
    # without it generates with num_beams=1 only.
    #
    # Optional: ``reserve(batch, total_length)``, called once before the prefill with the
    # generation's rows and positions (prompt + max_new_tokens): a backend whose cache
    # has a fixed size (:class:`diag.ort.static_backend.StaticOrtBackend`) raises there.

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

        Contract with the loop (:func:`diag.generation.decoding.iter_decode`):

        * ``attention_mask`` is a view of a buffer the loop preallocates for the
          whole generation: it may be non-contiguous (batch > 1) and is valid during
          the call only; call ``.contiguous()`` if the runtime needs a dense array.
          Every decode step appends a column of ones to the prompt's mask.
        * the loop clones the logits it keeps (``output_scores`` / ``output_logits``),
          so a backend may return a view of an output buffer it reuses next call.
        * ``past=None`` starts a new generation; a backend runs one generation at a
          time.
        """
        ...

    def reorder(self, past: Any, rows: torch.Tensor) -> Any:
        """The cache whose row ``i`` is the row ``rows[i]`` of ``past`` (``rows``: an
        int64 ``[batch]`` tensor, each row's source row): beam search reorders the
        cache this way after a step, so that each hypothesis reads the cache of the one
        it continues. ``past`` may be changed in place; the loop uses only the cache
        returned.
        """
        ...
