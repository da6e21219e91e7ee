"""The ONNX Runtime driver of a static cache export
(:data:`diag.contract.STATIC_LAYOUT`, ``export_causal_lm(..., cache="static",
max_length=N)``).

Each layer's key and value live in one ``[batch, kv_heads, max_length, head_dim]``
OrtValue, allocated (zeroed) once per generation and bound as the step's input
``past_key_values.{i}.*`` AND as its output ``present.{i}.*``: ``TensorScatter``
then writes the step's positions in place, nothing else of the cache moves. A step
feeds ``cache_position`` (where its positions go) and the attention mask over the
``max_length`` positions: the loop's mask, zeros after it (positions not written yet).

The zeros matter: a masked position gets a weight of exactly 0, and 0 times the
uninitialised memory of a fresh buffer could be NaN.

Example::

    backend = open_steps("model.onnx").backend           # a StaticOrtBackend for a static export
    logits, past = backend(ids, mask, positions, None)        # prefill: buffers allocated
    logits, past = backend(next_ids, longer_mask, next_pos, past)  # written in place
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from diag.contract import metadata_static_cache
from diag.helpers.dtypes import onnx_dtype_to_numpy_dtype
from diag.ort.backend import OrtBackend, OrtPast


class StaticPast(OrtPast):
    """The buffers of a static cache (:class:`OrtPast`'s order) and how many of their
    positions are written (:attr:`length`)."""

    def __new__(cls, values: Any, length: int) -> StaticPast:
        past = super().__new__(cls, values)
        past._length = length
        return past

    @property
    def length(self) -> int:
        """Number of positions written."""
        return self._length


def static_max_length(session: ort.InferenceSession) -> int | None:
    """The positions of a static export's buffers: its metadata, else the static third
    dimension of its first cache input; None when the model has neither."""
    entry = metadata_static_cache(session)
    if entry and isinstance(entry.get("max_length"), int):
        return entry["max_length"]
    for i in session.get_inputs():
        if len(i.shape) == 4 and isinstance(i.shape[2], int) and i.name != "input_ids":
            return int(i.shape[2])
    return None


class StaticOrtBackend(OrtBackend):
    """:class:`~diag.ort.backend.OrtBackend` for a static cache: the same session
    checks, logits and devices, the cache bound in place (see the module).

    :meth:`reserve` (called by the decoding loop before the prefill, with the
    generation's total length) refuses a generation longer than the buffers before
    any step runs; a step past them is refused as well.
    """

    def __init__(self, session: ort.InferenceSession, **kwargs: Any):
        super().__init__(session, **kwargs)
        self.max_length = self.layout.max_length or static_max_length(session)
        if self.max_length is None:
            raise ValueError(
                f"{self.layout.name} layout: the cache inputs have no static length and the "
                "metadata no max_length; export with export_causal_lm(model, cache='static', "
                "max_length=N)."
            )
        self._mask: np.ndarray | None = None

    def _too_long(self, total: int, what: str) -> ValueError:
        return ValueError(
            f"{what} needs {total} positions but this static cache export holds "
            f"max_length={self.max_length}: pass max_new_tokens <= {self.max_length} minus the "
            f"prompt length, or export again with export_causal_lm(model, cache='static', "
            f"max_length={total}) or more (or cache='dynamic')."
        )

    def reserve(self, batch: int, total_length: int) -> None:
        """Checks that a generation of ``total_length`` positions (prompt plus new
        tokens) fits the buffers; raises a ValueError saying what to pass if not."""
        if total_length > self.max_length:
            raise self._too_long(total_length, "this generation (prompt + max_new_tokens)")

    def empty_past(self, batch: int) -> StaticPast:
        """Zeroed buffers ``[batch, kv_heads, max_length, head_dim]``, new at each
        call: a generation owns its buffers (the steps write into them)."""
        values = []
        for (heads, dim), elem in zip(self.contract.past_shapes, self.contract.past_elem_types, strict=True):
            zeros = np.zeros((batch, heads, self.max_length, dim), dtype=onnx_dtype_to_numpy_dtype(elem))
            if self._on_cpu:
                # the OrtValue wraps the array's memory (and keeps it alive): no copy
                values.append(ort.OrtValue.ortvalue_from_numpy(zeros))
            else:
                values.append(ort.OrtValue.ortvalue_from_numpy(zeros, self.device_type, self.device_id))
        return StaticPast(values, 0)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: StaticPast | None,
    ) -> tuple[torch.Tensor, StaticPast]:
        batch, seq = int(input_ids.shape[0]), int(input_ids.shape[1])
        total = int(attention_mask.shape[1])
        if total > self.max_length:
            raise self._too_long(total, f"step {total - seq} -> {total}")
        rows = None
        if past is None:
            # right padding (GroupQueryAttention): the padding moved after the tokens
            input_ids, attention_mask, rows = self._check_prompt(input_ids, attention_mask)
            past = self.empty_past(batch)
            self._mask = np.zeros((batch, self.max_length), dtype=np.int64)
        elif not isinstance(past, StaticPast) or len(past) != len(self.contract.past_names):
            raise TypeError(
                "past must be the StaticPast returned by the previous step of this backend, "
                f"got {type(past).__name__}."
            )
        elif past.length != total - seq:
            raise ValueError(
                f"the buffers hold {past.length} positions but the mask says {total - seq} "
                "come before this step: give the mask of the whole sequence so far."
            )
        layout, runner = self.layout, self._runner
        feeds: dict[str, Any] = {}
        self.last_feeds = feeds
        mask = self._mask
        mask[:, :total] = attention_mask.detach().cpu().numpy()
        mask[:, total:] = 0
        wanted = self.contract.int_types.get(layout.attention_mask, np.dtype(np.int64))
        runner.bind_array(layout.attention_mask, mask if mask.dtype == wanted else mask.astype(wanted), feeds)
        for name, tensor in ((layout.input_ids, input_ids), (layout.position_ids, position_ids)):
            if name and name in runner.input_names:
                runner.bind_array(name, self._int_array(name, tensor), feeds)
        positions = np.arange(total - seq, total, dtype=np.int64)
        runner.bind_array(layout.cache_position, positions, feeds)
        rows = self._bind_logits_to_keep(runner, seq, rows, feeds)
        logits = runner.run_in_place(self.contract.past_names, self.contract.present_names, past, feeds)
        return self._logits_to_torch(logits, rows), StaticPast(tuple(past), total)


__all__ = ["StaticOrtBackend", "StaticPast", "static_max_length"]
