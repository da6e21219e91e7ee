"""The ONNX Runtime :class:`~diag.generation.backend.StepBackend`.

One step = one ``run_with_iobinding`` on a session that follows the export contract
(:mod:`diag.contract`). The feeds are built by :func:`diag.contract.feeds.step_feeds`;
the cache never leaves ONNX Runtime, kept by the backend's :mod:`cache strategy
<diag.ort.cache>` (grown from step to step, or written in place in fixed buffers).
Only the last position's logits come back to Python each step, as a torch tensor that
views the OrtValue's memory on the CPU (DLPack, no copy); on an accelerator only those
``[batch, vocab]`` floats are copied to the host. A graph taking ``logits_to_keep``
(:mod:`diag.contract.logits_to_keep`) computes only that last position's logits.

:func:`diag.ort.open.open_ort_backend` (what :func:`diag.generation.open_steps` calls)
reads the layout, the contract, the device and the defaults once and builds it.

Example::

    backend = open_ort_backend(make_session("model.onnx"))
    logits, past = backend.prefill(ids, mask, position_ids)
    logits, past = backend.decode(next_ids, longer_mask, next_pos, past)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from diag.contract import ContractInfo, last_position
from diag.contract.feeds import step_feeds
from diag.ort.binding import OrtPast, Runner
from diag.ort.cache import CacheStrategy, GrowingCache
from diag.ort.cache_reorder import reorder_values
from diag.ort.chunked_prefill import PREFILL_CHUNK, can_chunk, prefill_chunks, run_chunked


class OrtBackend:
    """Runs the steps of an exported causal LM with ONNX Runtime and IO binding.

    ``session`` is an ``onnxruntime.InferenceSession`` read as ``contract`` (its
    :class:`~diag.contract.ContractInfo`, whose layout names the inputs; a layout with
    a prefill graph needs ``prefill_session``, the session of that graph). ``cache``
    keeps the past (:mod:`diag.ort.cache`; None: a :class:`~diag.ort.cache.GrowingCache`).
    ``generation_defaults`` are the decoding defaults of the model (its side files or
    metadata); ``vocab_size`` None: the contract's. Inputs and outputs are bound on
    ``device_type`` / ``device_id`` (the session's first provider's).
    :func:`diag.ort.open.open_ort_backend` builds all of it from a file, a folder or a
    session.

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
        contract: ContractInfo,
        *,
        cache: CacheStrategy | None = None,
        prefill_session: ort.InferenceSession | None = None,
        generation_defaults: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        device_type: str = "cpu",
        device_id: int = 0,
        prefill_chunk: int | None = PREFILL_CHUNK,
        source: Any = None,
    ):
        if not isinstance(session, ort.InferenceSession):
            raise TypeError(
                "OrtBackend expects an onnxruntime.InferenceSession (open a file, a folder "
                "or a session with diag.ort.open_ort_backend), got "
                f"{type(session).__name__}."
            )
        self.session = session
        #: the graph's file or ModelProto when known (:func:`diag.ort.open.open_ort_backend`)
        self.source = source
        self.contract = contract
        self.layout = layout = contract.layout
        self.device_type, self.device_id = device_type.lower(), int(device_id)
        if vocab_size is None:
            vocab_size = contract.vocab_size
        self.vocab_size: int | None = int(vocab_size) if vocab_size is not None else None
        self.generation_defaults = generation_defaults
        self.cache: CacheStrategy = cache or GrowingCache(
            contract, self.device_type, self.device_id
        )
        self._runner = Runner(session, self.device_type, self.device_id, contract.int_types)
        self._prefill: Runner | None = None
        self._prefill_outputs: list[str] = []
        if layout.is_pair:
            if prefill_session is None:
                raise ValueError(
                    f"the {layout.name} layout runs a prefill graph ({layout.files[0] if layout.files else 'prefill'}) "
                    "before the decode one: pass prefill_session=, or open the folder with "
                    "diag.generation.open_steps(folder)."
                )
            self._prefill = Runner(
                prefill_session, self.device_type, self.device_id, contract.int_types
            )
            self._prefill_outputs = layout.prefill_output_names(contract.num_layers)
        self._on_cpu = self.device_type == "cpu"
        # a long prompt runs in steps of prefill_chunk tokens (diag.ort.chunked_prefill)
        prefill_chunks(0, prefill_chunk)  # checks the value
        self.prefill_chunk = prefill_chunk if can_chunk(layout) else None
        #: inputs of the last step (numpy arrays and OrtValues), for debugging
        self.last_feeds: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def label(self) -> str:
        """What runs, for messages: ``onnx <file>``, ``onnx <graph name>`` (a ModelProto)
        or ``onnx InferenceSession`` (a session whose file is unknown)."""
        if isinstance(self.source, str):
            return f"onnx {self.source}"
        if self.source is not None:
            return f"onnx {self.source.graph.name or 'ModelProto'}"
        return f"onnx {type(self.session).__name__}"

    @property
    def max_length(self) -> int | None:
        """The positions a generation may reach (a static cache's buffers), None: any."""
        return self.cache.max_length

    def reserve(self, batch: int, total_length: int) -> None:
        """Refuses a generation of ``total_length`` positions the cache cannot hold
        (see :class:`~diag.generation.backend.StepBackend`)."""
        self.cache.reserve(batch, total_length)

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

    def _logits_to_keep(
        self, runner: Runner, seq: int, rows: torch.Tensor | None
    ) -> tuple[np.ndarray | None, torch.Tensor | None]:
        """``logits_to_keep`` when the graph takes it: the last position only
        (``[batch, 1, vocab]``), or with right padding each row's own last real
        position (``rows``), each once; and the rows to read in the logits then."""
        if self.layout.logits_to_keep not in runner.int_types:
            return None, rows
        if rows is None:
            return last_position(seq), None
        positions, rows = torch.unique(rows, sorted=True, return_inverse=True)
        return positions.numpy(), rows

    # ------------------------------------------------------------------ the steps
    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, OrtPast]:
        """The prompt, from an empty cache (see :class:`~diag.generation.backend.StepBackend`);
        a long one in chunks (:mod:`diag.ort.chunked_prefill`)."""
        if self.prefill_chunk and input_ids.shape[1] > self.prefill_chunk:
            self._check_prompt(input_ids, attention_mask)  # the whole prompt's padding
            chunks = prefill_chunks(int(input_ids.shape[1]), self.prefill_chunk)
            return run_chunked(
                self._prefill_at_once, self.decode, input_ids, attention_mask, position_ids, chunks
            )
        return self._prefill_at_once(input_ids, attention_mask, position_ids)

    def _prefill_at_once(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, OrtPast]:
        input_ids, attention_mask, rows = self._check_prompt(input_ids, attention_mask)
        if self._prefill is not None:  # the prefill graph of a pair takes no past
            return self._step(self._prefill, input_ids, attention_mask, position_ids, (), rows,
                              self._prefill_outputs)  # fmt: skip
        past = self.cache.start(int(input_ids.shape[0]), int(attention_mask.shape[1]))
        return self._step(self._runner, input_ids, attention_mask, position_ids, past, rows)

    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: OrtPast,
    ) -> tuple[torch.Tensor, OrtPast]:
        """``input_ids`` after ``past`` (see :class:`~diag.generation.backend.StepBackend`)."""
        self.cache.check(past, int(attention_mask.shape[1]), int(input_ids.shape[1]))
        return self._step(self._runner, input_ids, attention_mask, position_ids, past, None)

    def _step(
        self,
        runner: Runner,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: OrtPast,
        rows: torch.Tensor | None,
        output_names: list[str] | None = None,
    ) -> tuple[torch.Tensor, OrtPast]:
        """One run: the feeds bound, the cache run by its strategy, the logits read."""
        keep, rows = self._logits_to_keep(runner, int(input_ids.shape[1]), rows)
        arrays = step_feeds(
            runner.int_types,
            input_ids,
            attention_mask,
            position_ids,
            layout=self.layout,
            logits_to_keep=keep,
            max_length=self.cache.max_length,
        )
        feeds: dict[str, Any] = {}
        self.last_feeds = feeds
        for name, array in arrays.items():
            runner.bind_array(name, array, feeds)
        total = int(attention_mask.shape[1])
        logits, past = self.cache.run(runner, past, feeds, total, output_names)
        return self._logits_to_torch(logits, rows), past

    def reorder(self, past: OrtPast, rows: torch.Tensor) -> OrtPast:
        """The cache following the rows of a beam search step, gathered on the device
        (:mod:`diag.ort.cache_reorder`)."""
        return self.cache.reordered(past, reorder_values(self, past, rows))

    def feeds_as_numpy(self) -> dict[str, np.ndarray]:
        """The last step's inputs as numpy arrays: ``session.run(None, feeds)`` replays it
        (on the prefill session for the first step of a prefill + decode pair; the last
        chunk of a chunked prefill)."""
        result = {}
        for name, value in self.last_feeds.items():
            result[name] = value if isinstance(value, np.ndarray) else value.numpy()
        return result
