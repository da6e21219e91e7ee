"""What a backend is: something that runs the steps of a causal LM.

The decoding loop (:mod:`diag.generation.decoding`) is shared by every backend.
It owns the token choice, the attention mask, the position ids and the stop
bookkeeping; a backend only runs the model: :meth:`StepBackend.prefill` on the whole
prompt starts a generation and returns its cache, :meth:`StepBackend.decode` runs the
next tokens on that cache. The cache (``past``) is opaque to the loop: a
``DynamicCache`` for torch, OrtValues kept on the device for ONNX Runtime.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class StepBackend(Protocol):
    """The steps of a causal LM: a prefill, then one decode step per new token.

    Example (the torch backend)::

        backend = TorchBackend(model)
        logits, past = backend.prefill(input_ids, attention_mask, position_ids)
        logits, past = backend.decode(next_ids, longer_mask, next_positions, past)

    Both return the float32 logits of the last position ``[batch, vocab]`` (a torch
    tensor on the CPU) and the new past. ``input_ids`` is ``[batch, seq]``,
    ``attention_mask`` ``[batch, past + seq]``, ``position_ids`` ``[batch, seq]``.

    Contract with the loop (:func:`diag.generation.decoding.iter_decode`):

    * ``attention_mask`` is a view of a buffer the loop preallocates for the whole
      generation: it may be non-contiguous (batch > 1) and is valid during the call
      only; call ``.contiguous()`` if the runtime needs a dense array. Every decode
      step appends a column of ones to the prompt's mask.
    * the loop clones the logits it keeps (``output_scores`` / ``output_logits``), so a
      backend may return a view of an output buffer it reuses next call.
    * :meth:`prefill` starts a new generation; a backend runs one generation at a time.
    """

    #: size of the vocabulary (last dimension of the logits)
    vocab_size: int | None

    # Optional: ``input_device``, the torch device where the loop keeps the ids, mask
    # and tokens it passes (the torch backend: the model's). Without it, they stay
    # where the prompt is (the CPU for ONNX Runtime, whose backend copies them).
    #
    # Beam search calls ``reorder(past, rows)`` between two steps (below); a backend
    # without it generates with num_beams=1 only.
    #
    # Optional: ``reserve(batch, total_length)``, called once before the prefill with the
    # generation's rows and positions (prompt + max_new_tokens): a backend whose cache
    # has a fixed size (an ONNX static cache export) raises there.

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """Runs the model on the whole prompt, no cache yet: the logits of its last
        position and the cache of the generation."""
        ...

    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: Any,
    ) -> tuple[torch.Tensor, Any]:
        """Runs the model on ``input_ids`` after ``past`` (what the step before
        returned): the logits of the last position and the longer cache."""
        ...

    def reorder(self, past: Any, rows: torch.Tensor) -> Any:
        """The cache whose row ``i`` is the row ``rows[i]`` of ``past`` (``rows``: an
        int64 ``[batch]`` tensor, each row's source row): beam search reorders the
        cache this way after a step, so that each hypothesis reads the cache of the one
        it continues. ``past`` may be changed in place; the loop uses only the cache
        returned.
        """
        ...


def is_step_backend(obj: Any) -> bool:
    """Whether ``obj`` follows :class:`StepBackend`: a ``prefill``, a ``decode`` and a
    ``vocab_size``, and is not a torch module (a model runs a whole forward).

    >>> is_step_backend(42)
    False
    """
    return (
        callable(getattr(obj, "prefill", None))
        and callable(getattr(obj, "decode", None))
        and hasattr(obj, "vocab_size")
        and not isinstance(obj, torch.nn.Module)
    )
