"""The ONNX Runtime :class:`~diag.generation.backend.StepBackend`.

One step = one ``run_with_iobinding`` on a session that follows the export contract
(:mod:`diag.contract`). The cache never leaves ONNX Runtime: the ``present.*``
OrtValues a step returns are bound, as they are, as the next step's
``past_key_values.*`` inputs (no copy, no numpy, no device round trip). Only the last
position's logits come back to Python each step, as a torch tensor that views the
OrtValue's memory on the CPU (DLPack, no copy); on an accelerator only those
``[batch, vocab]`` floats are copied to the host. A graph taking ``logits_to_keep``
(:mod:`diag.contract.logits_to_keep`) computes only that last position's logits.

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

from diag.contract import (
    ContractInfo,
    Layout,
    last_position,
    metadata_generation_config,
    read_contract,
)
from diag.contract.detect import detect_layout
from diag.contract.read import contract_error
from diag.ort.chunked_prefill import PREFILL_CHUNK, can_chunk, prefill_chunks, run_chunked
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


class _Runner:
    """One session with its reusable IO binding (see :class:`OrtBackend`)."""

    def __init__(self, session: ort.InferenceSession, device_type: str, device_id: int):
        self.session = session
        self.input_names = {i.name for i in session.get_inputs()}
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
            feeds[name + "#ortvalue"] = value
        feeds[name] = array

    def run(
        self, past_names: list[str], past: Any, output_names: list[str], feeds: dict[str, Any]
    ) -> list[Any]:
        # Binding an output to a device (no buffer) lets ONNX Runtime allocate it at
        # the right shape; rebinding every step matters: the binding otherwise keeps
        # the previous step's tensors and expects the same shapes.
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
            for name, out, value in zip(past_names, present_names, past, strict=True):
                binding.bind_ortvalue_input(name, value._ortvalue)
                binding.bind_ortvalue_output(out, value._ortvalue)
                feeds[name] = value
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


class OrtBackend:
    """Runs one step of an exported causal LM with ONNX Runtime and IO binding.

    ``session`` is an ``onnxruntime.InferenceSession`` (see
    :func:`diag.ort.session.make_session`) read against ``layout`` (None: detected
    from its names, :func:`diag.contract.detect.detect_layout`; a layout with a
    prefill graph needs ``prefill_session``, the session of that graph).
    :func:`diag.ort.open.open_backend` builds all of it from a file or a folder.
    ``generation_defaults`` are the decoding defaults of the model (its side files);
    None reads the metadata of the session. ``vocab_size`` is read from the logits
    output when its last dimension is static; pass it when it is not. The device where
    inputs and outputs are bound follows the session's first provider: ``"cuda"`` for
    ``CUDAExecutionProvider`` (the cache then stays on the GPU), else the CPU.

    ``prefill_chunk``: a prompt longer than that runs as steps of that many tokens
    (:mod:`diag.ort.chunked_prefill`: faster on the CPU, the same logits bit for bit;
    diag's own layout only); None runs it at once.

    The backend keeps no state between generations besides reusable IO bindings and
    the feeds of the last step (:attr:`last_feeds`, for debugging); one backend runs
    one generation at a time.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        layout: Layout | None = None,
        prefill_session: ort.InferenceSession | None = None,
        generation_defaults: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        device: str | None = None,
        device_id: int | None = None,
        prefill_chunk: int | None = PREFILL_CHUNK,
    ):
        if not isinstance(session, ort.InferenceSession):
            raise TypeError(
                "OrtBackend expects an onnxruntime.InferenceSession (see "
                f"diag.ort.make_session), got {type(session).__name__}."
            )
        self.session = session
        if layout is None:
            layout = detect_layout(session)
        self.contract: ContractInfo = read_contract(session, layout=layout)
        self.layout = layout
        dev_type, dev_id = provider_device(session)
        self.device_type = (device or dev_type).lower()
        self.device_id = dev_id if device_id is None else int(device_id)
        if vocab_size is None:
            vocab_size = self.contract.vocab_size
        self.vocab_size: int | None = int(vocab_size) if vocab_size is not None else None
        self.generation_defaults = (
            generation_defaults
            if generation_defaults is not None
            else metadata_generation_config(session)
        )
        self._runner = _Runner(session, self.device_type, self.device_id)
        self._prefill: _Runner | None = None
        self._prefill_outputs: list[str] = []
        if layout.is_pair:
            if prefill_session is None:
                raise ValueError(
                    f"the {layout.name} layout runs a prefill graph ({layout.files[0] if layout.files else 'prefill'}) "
                    "before the decode one: pass prefill_session=, or open the folder with "
                    "diag.ort.open_backend(folder)."
                )
            self._prefill = _Runner(prefill_session, self.device_type, self.device_id)
            self._prefill_outputs = [layout.logits] + [
                layout.prefill_present.name(i, kind)
                for i in range(self.contract.num_layers)
                for kind in layout.prefill_present.kinds
            ]
            produced = {o.name for o in prefill_session.get_outputs()}
            missing = [n for n in self._prefill_outputs if n not in produced]
            if missing:
                raise contract_error(
                    [f"the prefill graph lacks the outputs {missing[:3]} ({len(missing)} in all)"],
                    layout,
                )
        self._on_cpu = self.device_type == "cpu"
        # a long prompt runs in steps of prefill_chunk tokens (diag.ort.chunked_prefill)
        prefill_chunks(0, prefill_chunk)  # checks the value
        self.prefill_chunk = prefill_chunk if can_chunk(layout) else None
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

    def _int_array(self, name: str, tensor: torch.Tensor) -> np.ndarray:
        array = tensor.detach().cpu().numpy()
        wanted = self.contract.int_types.get(name, np.dtype(np.int64))
        if array.dtype != wanted or not array.flags.c_contiguous:
            array = np.ascontiguousarray(array, dtype=wanted)
        return array

    def _logits_to_torch(self, logits: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Last position's logits (``rows``: each row's last real position) as a
        float32 ``[batch, vocab]`` torch tensor."""
        if self._on_cpu and logits.element_type() != onnx.TensorProto.BFLOAT16:
            full = torch.from_dlpack(logits)  # a view, the OrtValue stays alive with it
        else:
            full = torch.from_numpy(np.asarray(logits.numpy()))
        if rows is not None:
            last = full[torch.arange(full.shape[0]), rows]
        else:
            last = full[:, -1, :]
            if full.shape[1] != 1:
                # after the prefill, keep only the last row, not the [batch, seq, vocab] block
                last = last.contiguous()
        return last if last.dtype == torch.float32 else last.float()

    def _check_prompt(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The prompt as the layout takes it, and the row of each last real token when
        the padding moved."""
        batch = int(input_ids.shape[0])
        if self.contract.batch_size is not None and batch != self.contract.batch_size:
            raise ValueError(
                f"this {self.layout.name} model was exported for batch {self.contract.batch_size} "
                f"only (its input_ids are {self.contract.batch_size} x seq), got a batch of "
                f"{batch}; export it with dynamic shapes, or generate one prompt at a time."
            )
        padded = bool((attention_mask == 0).any())
        if not padded:
            return input_ids, attention_mask, None
        if not self.contract.has_attention_mask:
            raise ValueError(
                f"this {self.layout.name} model has no attention_mask input, so it cannot "
                "tell padding from tokens: a left-padded batch would give wrong tokens. "
                "Generate one prompt at a time (or prompts of one length), or export the "
                "model with a sample attention_mask that has a zero."
            )
        if self.layout.padding != "right":
            return input_ids, attention_mask, None
        # GroupQueryAttention: the real tokens first, the padding after them
        lengths = attention_mask.sum(-1)
        width = attention_mask.shape[-1]
        order = torch.argsort((attention_mask == 0).to(torch.int8), dim=-1, stable=True)
        ids = torch.gather(input_ids, 1, order)
        mask = (torch.arange(width)[None, :] < lengths[:, None]).to(attention_mask.dtype)
        return ids, mask, lengths - 1

    def _bind_logits_to_keep(
        self, runner: _Runner, seq: int, rows: torch.Tensor | None, feeds: dict[str, Any]
    ) -> torch.Tensor | None:
        """Binds ``logits_to_keep`` when the graph takes it: the last position only
        (``[batch, 1, vocab]``), or with right padding each row's own last real
        position (``rows``), each once; returns the rows to read in the logits then."""
        keep = self.layout.logits_to_keep
        if not keep or keep not in runner.input_names:
            return rows
        if rows is None:
            wanted = last_position(seq)
        else:
            positions, rows = torch.unique(rows, sorted=True, return_inverse=True)
            wanted = positions.numpy()
        runner.bind_array(keep, wanted.astype(self.contract.int_types[keep], copy=False), feeds)
        return rows

    # ------------------------------------------------------------------ the step
    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: OrtPast | None,
    ) -> tuple[torch.Tensor, OrtPast]:
        if past is None and self.prefill_chunk and input_ids.shape[1] > self.prefill_chunk:
            self._check_prompt(input_ids, attention_mask)  # the whole prompt's padding
            chunks = prefill_chunks(int(input_ids.shape[1]), self.prefill_chunk)
            return run_chunked(self, input_ids, attention_mask, position_ids, chunks)
        rows = None
        runner = self._runner
        past_names = self.contract.past_names
        output_names = self.contract.output_names
        if past is None:
            input_ids, attention_mask, rows = self._check_prompt(input_ids, attention_mask)
            if self._prefill is not None:
                runner, past_names, past = self._prefill, [], ()
                output_names = self._prefill_outputs
            else:
                past = self.empty_past(int(input_ids.shape[0]))
        elif not isinstance(past, tuple) or len(past) != len(self.contract.past_names):
            raise TypeError(
                "past must be the OrtPast returned by the previous step of this backend "
                f"({len(self.contract.past_names)} OrtValues), got {type(past).__name__}."
            )
        feeds: dict[str, Any] = {}
        self.last_feeds = feeds
        layout = self.layout
        for name, tensor in (
            (layout.input_ids, input_ids),
            (layout.attention_mask, attention_mask),
            (layout.position_ids, position_ids),
        ):
            if name and name in runner.input_names:
                runner.bind_array(name, self._int_array(name, tensor), feeds)
        rows = self._bind_logits_to_keep(runner, int(input_ids.shape[1]), rows, feeds)
        outputs = runner.run(past_names, past, output_names, feeds)
        return self._logits_to_torch(outputs[0], rows), OrtPast(outputs[1:])

    def feeds_as_numpy(self) -> dict[str, np.ndarray]:
        """The last step's inputs as numpy arrays: ``session.run(None, feeds)`` replays it
        (on the prefill session for the first step of a prefill + decode pair; the last
        chunk of a chunked prefill)."""
        result = {}
        for name, value in self.last_feeds.items():
            if name.endswith("#ortvalue"):
                continue
            result[name] = value if isinstance(value, np.ndarray) else value.numpy()
        return result
