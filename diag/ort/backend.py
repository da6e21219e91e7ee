"""The ONNX Runtime :class:`~diag.generation.backend.StepBackend`.

One step = one ``run_with_iobinding`` on a session that follows the export contract
(:mod:`diag.contract`). The cache never leaves ONNX Runtime: the ``present.*``
OrtValues a step returns are bound, as they are, as the next step's
``past_key_values.*`` inputs (no copy, no numpy, no device round trip). Only the last
position's logits come back to Python each step, as a torch tensor that views the
OrtValue's memory on the CPU (DLPack, no copy); on an accelerator only those
``[batch, vocab]`` floats are copied to the host.

Example::

    backend = OrtBackend(make_session("model.onnx"))
    logits, past = backend(ids, mask, position_ids, None)          # prefill
    logits, past = backend(next_ids, longer_mask, next_pos, past)  # decode
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from diag.contract import ContractInfo, read_contract
from diag.ort.session import provider_device


class OrtPast(tuple):
    """The cache between two steps: the ``present.*`` OrtValues of the last step, in
    the order of :attr:`ContractInfo.past_names`. Opaque to the decoding loop."""

    __slots__ = ()

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return int(self[0].shape()[2]) if self else 0

    def to_numpy(self) -> list[np.ndarray]:
        """Copies the cache out (debugging only: the loop never needs it)."""
        return [v.numpy() for v in self]


class OrtBackend:
    """Runs one step of an exported causal LM with ONNX Runtime and IO binding.

    ``session`` is an ``onnxruntime.InferenceSession`` (see
    :func:`diag.ort.session.make_session`). ``vocab_size`` is read from the logits
    output when its last dimension is static; pass it when it is not. The device where
    inputs and outputs are bound follows the session's first provider: ``"cuda"`` for
    ``CUDAExecutionProvider`` (the cache then stays on the GPU), else the CPU.

    The backend keeps no state between generations besides a reusable IO binding and
    the feeds of the last step (:attr:`last_feeds`, for debugging); one backend runs
    one generation at a time.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        vocab_size: int | None = None,
        device: str | None = None,
        device_id: int | None = None,
    ):
        if not isinstance(session, ort.InferenceSession):
            raise TypeError(
                "OrtBackend expects an onnxruntime.InferenceSession (see "
                f"diag.ort.make_session), got {type(session).__name__}."
            )
        self.session = session
        self.contract: ContractInfo = read_contract(session)
        dev_type, dev_id = provider_device(session)
        self.device_type = (device or dev_type).lower()
        self.device_id = dev_id if device_id is None else int(device_id)
        if vocab_size is None:
            vocab_size = self.contract.vocab_size
        self.vocab_size: int | None = int(vocab_size) if vocab_size is not None else None
        # One binding reused by every step: only the bindings change. Measured on
        # SmolLM2 (61 cache/logits values): ~30 us per step through the C++ binding,
        # ~90 us through the Python wrapper (its checks matter for WebGPU graph capture
        # only), against ~20 ms for the step itself. The wrapper is the fallback when
        # another onnxruntime version lays its internals out differently.
        self._binding = session.io_binding()
        cbinding = getattr(self._binding, "_iobinding", None)
        csession = getattr(session, "_sess", None)
        self._fast = all(
            hasattr(x, a)
            for x, a in (
                (cbinding, "bind_ortvalue_input"),
                (cbinding, "bind_output"),
                (cbinding, "get_outputs"),
                (csession, "run_with_iobinding"),
            )
        )
        self._cbinding = cbinding if self._fast else None
        self._csession = csession if self._fast else None
        self._cdevice = (
            ort.OrtDevice.make(self.device_type, self.device_id)._get_c_device()
            if self._fast
            else None
        )
        self._on_cpu = self.device_type == "cpu"
        self._empty_past: dict[int, OrtPast] = {}
        #: inputs of the last step (numpy arrays and OrtValues), for debugging
        self.last_feeds: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def empty_past(self, batch: int) -> OrtPast:
        """The cache of the prefill: ``[batch, kv_heads, 0, head_dim]`` per tensor."""
        past = self._empty_past.get(batch)
        if past is None:
            values = []
            for (heads, dim), elem in zip(
                self.contract.past_shapes, self.contract.past_elem_types, strict=True
            ):
                values.append(
                    ort.OrtValue.ortvalue_from_shape_and_type(
                        [batch, heads, 0, dim], elem, self.device_type, self.device_id
                    )
                )
            past = OrtPast(values)
            self._empty_past = {batch: past}  # keep one: batches rarely change
        return past

    def _bind_int(self, name: str, tensor: torch.Tensor) -> np.ndarray:
        array = tensor.detach().cpu().numpy()
        wanted = self.contract.int_types[name]
        if array.dtype != wanted or not array.flags.c_contiguous:
            array = np.ascontiguousarray(array, dtype=wanted)
        if self._on_cpu:
            # binds the numpy buffer itself; the array is kept alive in last_feeds
            if self._fast:
                self._cbinding.bind_input(name, array)
            else:
                self._binding.bind_cpu_input(name, array)
        else:
            # a host-to-device copy of a few int64 values
            value = ort.OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)
            self._binding.bind_ortvalue_input(name, value)
            self.last_feeds[name + "#ortvalue"] = value
        return array

    def _logits_to_torch(self, logits: Any) -> torch.Tensor:
        """Last position's logits as a float32 ``[batch, vocab]`` torch tensor."""
        if self._on_cpu and logits.element_type() != onnx.TensorProto.BFLOAT16:
            full = torch.from_dlpack(logits)  # a view, the OrtValue stays alive with it
        else:
            full = torch.from_numpy(np.asarray(logits.numpy()))
        last = full[:, -1, :]
        if full.shape[1] != 1:
            # after the prefill, keep only the last row, not the [batch, seq, vocab] block
            last = last.contiguous()
        return last if last.dtype == torch.float32 else last.float()

    # ------------------------------------------------------------------ the step
    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: OrtPast | None,
    ) -> tuple[torch.Tensor, OrtPast]:
        if past is None:
            past = self.empty_past(int(input_ids.shape[0]))
        elif not isinstance(past, tuple) or len(past) != len(self.contract.past_names):
            raise TypeError(
                "past must be the OrtPast returned by the previous step of this backend "
                f"({len(self.contract.past_names)} OrtValues), got {type(past).__name__}."
            )
        feeds: dict[str, Any] = {}
        self.last_feeds = feeds
        ids, mask, positions = self.contract.layout.token_inputs
        feeds[ids] = self._bind_int(ids, input_ids)
        feeds[mask] = self._bind_int(mask, attention_mask)
        if self.contract.has_position_ids:
            feeds[positions] = self._bind_int(positions, position_ids)
        # Binding an output to a device (no buffer) lets ONNX Runtime allocate it at
        # the right shape; rebinding every step matters: the binding otherwise keeps
        # the previous step's tensors and expects the same shapes.
        if self._fast:
            bind_input = self._cbinding.bind_ortvalue_input
            for name, value in zip(self.contract.past_names, past, strict=True):
                bind_input(name, value._ortvalue)
                feeds[name] = value
            bind_output = self._cbinding.bind_output
            for name in self.contract.output_names:
                bind_output(name, self._cdevice)
            self._csession.run_with_iobinding(self._cbinding, None)
            raw = self._cbinding.get_outputs()
            outputs = [ort.OrtValue(raw[i]) for i in range(len(raw))]
        else:
            for name, value in zip(self.contract.past_names, past, strict=True):
                self._binding.bind_ortvalue_input(name, value)
                feeds[name] = value
            for name in self.contract.output_names:
                self._binding.bind_output(name, self.device_type, self.device_id)
            self.session.run_with_iobinding(self._binding)
            outputs = self._binding.get_outputs()
        return self._logits_to_torch(outputs[0]), OrtPast(outputs[1:])

    def feeds_as_numpy(self) -> dict[str, np.ndarray]:
        """The last step's inputs as numpy arrays: ``session.run(None, feeds)`` replays it."""
        result = {}
        for name, value in self.last_feeds.items():
            if name.endswith("#ortvalue"):
                continue
            result[name] = value if isinstance(value, np.ndarray) else value.numpy()
        return result
