"""The IO binding of an ONNX Runtime step: :class:`Runner` binds the inputs and runs
one session, :class:`OrtPast` carries the cache from one step to the next.

:class:`diag.ort.backend.OrtBackend` and its cache strategies (:mod:`diag.ort.cache`)
build on them; a step binds each ``past_key_values.*`` input to the ``present.*``
OrtValue of the step before, without a copy.

Example::

    >>> OrtPast().length
    0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort


class OrtPast(tuple):
    """The cache between two steps: the ``present.*`` OrtValues of the last step, in
    the order of :attr:`diag.contract.ContractInfo.past_names`. Opaque to the decoding loop."""

    __slots__ = ()

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return int(self[0].shape()[2]) if self else 0

    def to_numpy(self) -> list[np.ndarray]:
        """Copies the cache out (debugging only: the loop never needs it)."""
        return [v.numpy() for v in self]


class Runner:
    """One session with its reusable IO binding (see :class:`diag.ort.backend.OrtBackend`)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        device_type: str,
        device_id: int,
        int_types: Mapping[str, np.dtype] | None = None,
    ):
        self.session = session
        self.input_names = {i.name for i in session.get_inputs()}
        #: the integer inputs of the step (ids, mask...) this session takes, with their types
        self.int_types = {n: t for n, t in (int_types or {}).items() if n in self.input_names}
        # One binding reused by every step: only the bindings change. Measured on
        # SmolLM2 (61 cache/logits values): ~30 us per step through the C++ binding,
        # ~90 us through the Python wrapper (its checks matter for WebGPU graph capture
        # only), against ~20 ms for the step itself. The wrapper is the fallback when
        # another onnxruntime version lays its internals out differently.
        self.binding = session.io_binding()
        cbinding = getattr(self.binding, "_iobinding", None)
        csession = getattr(session, "_sess", None)
        self.fast = all(
            hasattr(x, a)
            for x, a in (
                (cbinding, "bind_ortvalue_input"),
                (cbinding, "bind_output"),
                (cbinding, "get_outputs"),
                (csession, "run_with_iobinding"),
            )
        )
        self.cbinding = cbinding if self.fast else None
        self.csession = csession if self.fast else None
        self.cdevice = (
            ort.OrtDevice.make(device_type, device_id)._get_c_device() if self.fast else None
        )
        self.device_type, self.device_id = device_type, device_id
        # the buffers run_in_place bound last (names and OrtValues): the next step of a
        # static cache binds the same ones, which the binding still holds
        self._in_place: tuple | None = None
        # the device copies of the step's int inputs (an accelerator only)
        self._device_inputs: dict[str, ort.OrtValue] = {}

    def bind_array(self, name: str, array: np.ndarray, feeds: dict[str, Any]) -> None:
        if self.device_type == "cpu":
            # binds the numpy buffer itself; the array is kept alive in feeds
            if self.fast:
                self.cbinding.bind_input(name, array)
            else:
                self.binding.bind_cpu_input(name, array)
        else:
            # a host-to-device copy of a few int64 values
            value = ort.OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)
            self.binding.bind_ortvalue_input(name, value)
            # the binding does not own the device copy: kept alive until the next step
            self._device_inputs[name] = value
        feeds[name] = array

    def run(
        self, past_names: list[str], past: Any, output_names: list[str], feeds: dict[str, Any]
    ) -> list[Any]:
        # Binding an output to a device (no buffer) lets ONNX Runtime allocate it at
        # the right shape; rebinding every step matters: the binding otherwise keeps
        # the previous step's tensors and expects the same shapes.
        self._in_place = None  # the cache names get other values
        if self.fast:
            bind_input = self.cbinding.bind_ortvalue_input
            for name, value in zip(past_names, past, strict=True):
                bind_input(name, value._ortvalue)
                feeds[name] = value
            bind_output = self.cbinding.bind_output
            for name in output_names:
                bind_output(name, self.cdevice)
            self.csession.run_with_iobinding(self.cbinding, None)
            raw = self.cbinding.get_outputs()
            return [ort.OrtValue(raw[i]) for i in range(len(raw))]
        for name, value in zip(past_names, past, strict=True):
            self.binding.bind_ortvalue_input(name, value)
            feeds[name] = value
        for name in output_names:
            self.binding.bind_output(name, self.device_type, self.device_id)
        self.session.run_with_iobinding(self.binding)
        return self.binding.get_outputs()


    def run_in_place(
        self, past_names: list[str], present_names: list[str], past: Any, feeds: dict[str, Any]
    ) -> Any:
        """Runs the step with each buffer bound as its past input and its present output
        (a static cache: ONNX Runtime's TensorScatter then writes in place); returns the
        logits, the only output ONNX Runtime allocates."""
        # the logits bound first: the binding returns its outputs in the order they were bound
        logits_name = self.session.get_outputs()[0].name
        if self.fast:
            binding = self.cbinding
            binding.bind_output(logits_name, self.cdevice)
            bound = self._in_place
            if (
                bound is None
                or bound[0] is not past_names
                or bound[1] is not present_names
                or len(bound[2]) != len(past)
                or any(a is not b for a, b in zip(bound[2], past, strict=True))
            ):
                # the same buffers as the step before are left bound (~120 calls less
                # a step: 2 per cache tensor)
                for name, out, value in zip(past_names, present_names, past, strict=True):
                    binding.bind_ortvalue_input(name, value._ortvalue)
                    binding.bind_ortvalue_output(out, value._ortvalue)
                self._in_place = (past_names, present_names, tuple(past))
            feeds.update(zip(past_names, past, strict=True))
            self.csession.run_with_iobinding(binding, None)
            return ort.OrtValue(binding.get_outputs()[0])
        binding = self.binding
        binding.bind_output(logits_name, self.device_type, self.device_id)
        for name, out, value in zip(past_names, present_names, past, strict=True):
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(out, value)
            feeds[name] = value
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0]
