"""The reorder of an ONNX Runtime cache between two beam search steps, on the device.

Beam search moves hypotheses between rows after each step; the cache has to follow:
row ``i`` of every cache tensor becomes row ``rows[i]`` of the step before. Here that
is one small ONNX graph, one ``Gather(axis=0)`` per cache tensor, run with IO binding
on the OrtValues the step returned: the cache stays where ONNX Runtime keeps it (no
copy to numpy, no trip through Python), one session run per step for all layers.

Every layout :func:`diag.onnx_generate` drives (diag's dynamic, static and
GroupQueryAttention exports, onnxruntime-genai's builder, transformers' exporter,
optimum-onnx, onnx-diagnostic) keeps the batch first in each cache tensor
(``[batch, kv_heads, positions, head_dim]``, :class:`diag.contract.ContractInfo`), so
one graph serves them all; a static cache's buffers are gathered whole into new
buffers, which the next step binds in place.

Example::

    reorder = cache_reorder(backend.contract.past_elem_types, "cpu", 0, ["CPUExecutionProvider"])
    values = reorder(past, torch.tensor([0, 0, 1, 3]))   # the OrtValues of the new rows
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from diag.ort.binding import Runner

#: the opset of the graph (Gather has not changed since 13)
_OPSET = 18


def reorder_model(elem_types: Sequence[int]) -> onnx.ModelProto:
    """The graph: inputs ``rows`` (int64 ``[n]``) and ``past.{i}`` (any shape, batch
    first, element type ``elem_types[i]``), outputs ``reordered.{i} = Gather(past.{i},
    rows, axis=0)``.

    >>> [n.op_type for n in reorder_model([TensorProto.FLOAT] * 2).graph.node]
    ['Gather', 'Gather']
    """
    rows = helper.make_tensor_value_info("rows", TensorProto.INT64, ["rows"])
    inputs, outputs, nodes = [rows], [], []
    for i, elem in enumerate(elem_types):
        inputs.append(helper.make_tensor_value_info(f"past.{i}", elem, None))
        outputs.append(helper.make_tensor_value_info(f"reordered.{i}", elem, None))
        nodes.append(helper.make_node("Gather", [f"past.{i}", "rows"], [f"reordered.{i}"], axis=0))
    graph = helper.make_graph(nodes, "diag_cache_reorder", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8  # read by every onnxruntime diag supports
    return model


class CacheReorder:
    """Runs :func:`reorder_model` with IO binding: the cache OrtValues in, new ones out,
    on ``device_type`` / ``device_id`` (the backend's). Build it with
    :func:`cache_reorder`, which keeps one per kind of cache."""

    def __init__(
        self, elem_types: Sequence[int], device_type: str, device_id: int, providers: Sequence[Any]
    ):
        session = ort.InferenceSession(
            reorder_model(elem_types).SerializeToString(), providers=list(providers)
        )
        self._runner = Runner(session, device_type, device_id)
        self._inputs = [f"past.{i}" for i in range(len(elem_types))]
        self._outputs = [f"reordered.{i}" for i in range(len(elem_types))]

    def __call__(self, past: Sequence[ort.OrtValue], rows: torch.Tensor) -> list[ort.OrtValue]:
        if len(past) != len(self._inputs):
            raise ValueError(
                f"the cache holds {len(past)} tensors, the reorder graph {len(self._inputs)}: "
                "pass the cache returned by the backend's last step."
            )
        batch = int(past[0].shape()[0]) if past else 0
        index = rows.detach().cpu().numpy().astype(np.int64, copy=False)
        if index.ndim != 1 or (index.size and not (0 <= index.min() and index.max() < batch)):
            raise ValueError(
                f"rows must be a 1-D tensor of rows in [0, {batch}) (the cache's batch), got "
                f"{rows.tolist()}."
            )
        feeds: dict[str, Any] = {}
        self._runner.bind_array("rows", np.ascontiguousarray(index), feeds)
        return self._runner.run(self._inputs, past, self._outputs, feeds)


@functools.lru_cache(maxsize=8)
def _cached(
    elem_types: tuple[int, ...], device_type: str, device_id: int, providers: tuple[Any, ...]
) -> CacheReorder:
    return CacheReorder(elem_types, device_type, device_id, providers)


def cache_reorder(
    elem_types: Sequence[int], device_type: str, device_id: int, providers: Sequence[Any]
) -> CacheReorder:
    """The :class:`CacheReorder` of a cache whose tensors have ``elem_types`` (ONNX
    element types), on that device, built once and kept (a backend reorders at every
    step).

    >>> reorder = cache_reorder([TensorProto.FLOAT], "cpu", 0, ["CPUExecutionProvider"])
    >>> past = [ort.OrtValue.ortvalue_from_numpy(np.arange(3, dtype=np.float32)[:, None])]
    >>> reorder(past, torch.tensor([2, 2, 0]))[0].numpy().ravel().tolist()
    [2.0, 2.0, 0.0]
    """
    key = tuple(p if isinstance(p, str) else p[0] for p in providers)
    return _cached(tuple(int(e) for e in elem_types), device_type, int(device_id), key)


def reorder_values(backend: Any, past: Sequence[ort.OrtValue], rows: torch.Tensor) -> list[Any]:
    """The cache OrtValues of ``backend`` (an :class:`~diag.ort.backend.OrtBackend`)
    reordered by ``rows``, on its device, by its session's providers."""
    reorder = cache_reorder(
        backend.contract.past_elem_types,
        backend.device_type,
        backend.device_id,
        backend.session.get_providers(),
    )
    return reorder(past, rows)


__all__ = ["CacheReorder", "cache_reorder", "reorder_model", "reorder_values"]
