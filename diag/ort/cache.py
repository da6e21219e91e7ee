"""How an ONNX Runtime step keeps the cache: the strategy an
:class:`~diag.ort.backend.OrtBackend` holds.

* :class:`GrowingCache` (every layout but the static one): the ``present.*``
  OrtValues a step returns are bound, as they are, as the next step's
  ``past_key_values.*`` (no copy, no numpy, no device round trip); the prefill starts
  from an empty past.
* :class:`InPlaceCache` (a static cache export, :data:`diag.contract.STATIC_LAYOUT`):
  each layer's key and value live in one ``[batch, kv_heads, max_length, head_dim]``
  OrtValue, allocated (zeroed) once per generation and bound as the step's input
  ``past_key_values.{i}.*`` AND as its output ``present.{i}.*``: ``TensorScatter``
  then writes the step's positions in place, nothing else of the cache moves. The
  zeros matter: a masked position gets a weight of exactly 0, and 0 times the
  uninitialised memory of a fresh buffer could be NaN.

Both take the same calls: :meth:`~GrowingCache.start` (the past of a prefill), :meth:`~GrowingCache.check` (the
past a decode step is given), :meth:`~GrowingCache.run` (one step on the bound feeds).

Example::

    >>> OrtPast().length, StaticPast((), 3).length
    (0, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from diag.contract import ContractInfo
from diag.helpers.dtypes import onnx_dtype_to_numpy_dtype
from diag.ort.binding import OrtPast, Runner


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


class GrowingCache:
    """Each step's ``present.*`` bound as the next step's past (see the module)."""

    #: a growing cache has no fixed size
    max_length: int | None = None

    def __init__(self, contract: ContractInfo, device_type: str = "cpu", device_id: int = 0):
        self.contract = contract
        self.device_type, self.device_id = device_type, device_id
        self._empty: dict[int, OrtPast] = {}

    def reserve(self, batch: int, total_length: int) -> None:
        """Any length fits a growing cache."""

    def start(self, batch: int, total: int) -> OrtPast:
        """The past of a prefill: ``[batch, kv_heads, 0, head_dim]`` per tensor."""
        if batch not in self._empty:
            empty = OrtPast(
                ort.OrtValue.ortvalue_from_shape_and_type(
                    [batch, heads, 0, dim], elem, self.device_type, self.device_id
                )
                for (heads, dim), elem in zip(
                    self.contract.past_shapes, self.contract.past_elem_types, strict=True
                )
            )
            self._empty = {batch: empty}  # keep one: batches rarely change
        return self._empty[batch]

    def check(self, past: Any, total: int, seq: int) -> None:
        """Refuses a ``past`` that is not the one a step of this backend returned."""
        if not isinstance(past, tuple) or len(past) != len(self.contract.past_names):
            raise TypeError(
                "past must be the OrtPast returned by the previous step of this backend "
                f"({len(self.contract.past_names)} OrtValues), got {type(past).__name__}."
            )

    def run(
        self,
        runner: Runner,
        past: OrtPast,
        feeds: dict[str, Any],
        total: int,
        output_names: list[str] | None = None,
    ) -> tuple[Any, OrtPast]:
        """Runs the step: the logits OrtValue and the new past. ``output_names``: the
        outputs of a prefill graph, which takes no past (a prefill + decode pair)."""
        if output_names is None:
            past_names, output_names = self.contract.past_names, self.contract.output_names
        else:
            past_names = []
        outputs = runner.run(past_names, past, output_names, feeds)
        return outputs[0], OrtPast(outputs[1:])

    def reordered(self, past: OrtPast, values: list[ort.OrtValue]) -> OrtPast:
        """The past made of ``values``, the rows of ``past`` a beam search step chose
        (gathered on the device by :mod:`diag.ort.cache_reorder`)."""
        return OrtPast(values)


class InPlaceCache:
    """Buffers of ``max_length`` positions written in place (see the module).

    :meth:`reserve` (called by the decoding loop before the prefill, with the
    generation's total length) refuses a generation longer than the buffers before
    any step runs; a step past them is refused as well.
    """

    def __init__(
        self, contract: ContractInfo, max_length: int, device_type: str = "cpu", device_id: int = 0
    ):
        self.contract = contract
        self.device_type, self.device_id = device_type, device_id
        self.max_length: int | None = max_length

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

    def start(self, batch: int, total: int) -> StaticPast:
        """Zeroed buffers ``[batch, kv_heads, max_length, head_dim]``, new at each
        call: a generation owns its buffers (the steps write into them)."""
        if total > self.max_length:
            raise self._too_long(total, f"step 0 -> {total}")
        values = []
        for (heads, dim), elem in zip(
            self.contract.past_shapes, self.contract.past_elem_types, strict=True
        ):
            zeros = np.zeros(
                (batch, heads, self.max_length, dim), dtype=onnx_dtype_to_numpy_dtype(elem)
            )
            if self.device_type == "cpu":
                # the OrtValue wraps the array's memory (and keeps it alive): no copy
                values.append(ort.OrtValue.ortvalue_from_numpy(zeros))
            else:
                values.append(
                    ort.OrtValue.ortvalue_from_numpy(zeros, self.device_type, self.device_id)
                )
        return StaticPast(values, 0)

    def check(self, past: Any, total: int, seq: int) -> None:
        """Refuses a step past the buffers, or a ``past`` that is not this backend's
        buffers holding the positions the mask puts before the step."""
        if total > self.max_length:
            raise self._too_long(total, f"step {total - seq} -> {total}")
        if not isinstance(past, StaticPast) or len(past) != len(self.contract.past_names):
            raise TypeError(
                "past must be the StaticPast returned by the previous step of this backend, "
                f"got {type(past).__name__}."
            )
        if past.length != total - seq:
            raise ValueError(
                f"the buffers hold {past.length} positions but the mask says {total - seq} "
                "come before this step: give the mask of the whole sequence so far."
            )

    def run(
        self,
        runner: Runner,
        past: StaticPast,
        feeds: dict[str, Any],
        total: int,
        output_names: list[str] | None = None,
    ) -> tuple[Any, StaticPast]:
        """Runs the step with the buffers bound as past and present: the logits
        OrtValue and the same buffers, ``total`` positions written."""
        logits = runner.run_in_place(
            self.contract.past_names, self.contract.present_names, past, feeds
        )
        return logits, StaticPast(tuple(past), total)

    def reordered(self, past: StaticPast, values: list[ort.OrtValue]) -> StaticPast:
        """New buffers made of ``values``, the rows of ``past`` a beam search step chose,
        holding as many positions: the next step binds and writes them in place."""
        return StaticPast(values, past.length)


#: what an :class:`~diag.ort.backend.OrtBackend` holds: both take the calls of the module
CacheStrategy = GrowingCache | InPlaceCache


__all__ = ["CacheStrategy", "GrowingCache", "InPlaceCache", "StaticPast"]
