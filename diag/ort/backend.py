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
from diag.ort.binding import OrtPast, Runner
from diag.ort.cache_reorder import reorder_values
from diag.ort.chunked_prefill import PREFILL_CHUNK, can_chunk, prefill_chunks, run_chunked
from diag.ort.session import provider_device


class OrtBackend:
    """Runs one step of an exported causal LM with ONNX Runtime and IO binding.

    ``session`` is an ``onnxruntime.InferenceSession`` (see
    :func:`diag.ort.session.make_session`) read against ``layout`` (None: detected
    from its names, :func:`diag.contract.detect.detect_layout`; a layout with a
    prefill graph needs ``prefill_session``, the session of that graph).
    :func:`diag.generation.open_steps` builds all of it from a file or a folder.
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
        source: Any = None,
    ):
        if not isinstance(session, ort.InferenceSession):
            raise TypeError(
                "OrtBackend expects an onnxruntime.InferenceSession (see "
                f"diag.ort.make_session), got {type(session).__name__}."
            )
        self.session = session
        #: the graph's file or ModelProto when known (:func:`diag.ort.open.open_ort_backend`)
        self.source = source
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
        self._runner = Runner(session, self.device_type, self.device_id)
        self._prefill: Runner | None = None
        self._prefill_outputs: list[str] = []
        if layout.is_pair:
            if prefill_session is None:
                raise ValueError(
                    f"the {layout.name} layout runs a prefill graph ({layout.files[0] if layout.files else 'prefill'}) "
                    "before the decode one: pass prefill_session=, or open the folder with "
                    "diag.generation.open_steps(folder)."
                )
            self._prefill = Runner(prefill_session, self.device_type, self.device_id)
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
        if self.layout.name == "diag" and not self.contract.has_position_ids:
            # diag's plain layout: the graph counts positions from the cache, padding included
            raise ValueError(
                "this diag export takes no position_ids (layout='plain'), so the model counts "
                "the padding among the positions: a left-padded batch would not give "
                "model.generate's tokens. Generate one prompt at a time (or prompts of one "
                "length), or export with export_causal_lm's default layout='diag'."
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
        self, runner: Runner, seq: int, rows: torch.Tensor | None, feeds: dict[str, Any]
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

    def reorder(self, past: OrtPast, rows: torch.Tensor) -> OrtPast:
        """The cache following the rows of a beam search step, gathered on the device
        (:mod:`diag.ort.cache_reorder`)."""
        return OrtPast(reorder_values(self, past, rows))

    def feeds_as_numpy(self) -> dict[str, np.ndarray]:
        """The last step's inputs as numpy arrays: ``session.run(None, feeds)`` replays it
        (on the prefill session for the first step of a prefill + decode pair; the last
        chunk of a chunked prefill)."""
        result = {}
        for name, value in self.last_feeds.items():
            result[name] = value if isinstance(value, np.ndarray) else value.numpy()
        return result
