"""The torch side of the static cache layout: buffers of ``max_length`` positions that
a step writes its new keys and values into, in place.

The dynamic layout returns ``present =
Concat(past, new)``: every decode step copies the whole cache into new tensors. Here
each layer's cache is one preallocated ``[batch, kv_heads, max_length, head_dim]``
buffer, a graph input (``past_key_values.{i}.*``) and a graph output
(``present.{i}.*``) of the same shape; the step writes its ``seq`` new positions at
``cache_position`` with ONNX's ``TensorScatter`` (opset 24), which ONNX Runtime runs in
place when the driver binds the output to the input's OrtValue
(:mod:`diag.ort.cache`), and attends over the whole buffer.

* The write is a small torch custom op, ``diag::cache_write`` (eager: ``index_copy``
  along the length axis, out of place so that torch.export sees a pure function), that
  :data:`TRANSLATION_TABLE` translates to ``TensorScatter``: the graph holds exactly
  the op made for it, not a pattern to recognise afterwards.
* The masks are transformers' own: the cache reports a mask of ``max_length``
  positions from offset 0 and the step's first position as the query offset (what
  transformers' ``StaticCache`` does), so the causal mask hides what is not written
  yet and the ``attention_mask`` input (``[batch, max_length]``, 0 on the left padding
  and on the positions not written yet) hides the padding.
* Sliding-window layers keep the full buffer as well (no ring buffer): their sliding
  mask, built by transformers over the ``max_length`` positions from the query
  positions, hides what lies outside the window, so a generation past the window is
  exact, at the memory of a full layer.
* ``cache_position`` (int64 ``[seq]``: ``past, ..., past + seq - 1``, transformers'
  own name for it) is an explicit input: every row of a left-padded batch writes at
  the same positions, and the graph cannot read how much of a buffer is filled from
  its shape. It is given to the forward when the forward takes it (transformers 4.x).

Example::

    >>> import torch
    >>> buffer = torch.zeros(1, 1, 4, 2)
    >>> cache_write(buffer, torch.ones(1, 1, 2, 2), torch.tensor([1, 2]))[0, 0, :, 0]
    tensor([0., 1., 1., 0.])
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from diag.compat.transformers_api import cache_argument, forward_parameters
from diag.export.plan.option_checks import STATIC_OPSET

#: the name of the write position input (transformers' name for it)
CACHE_POSITION = "cache_position"


@torch.library.custom_op("diag::cache_write", mutates_args=())
def cache_write(
    buffer: torch.Tensor, new: torch.Tensor, cache_position: torch.Tensor
) -> torch.Tensor:
    """``buffer`` with ``new`` written at positions ``cache_position`` along axis 2
    (a new tensor: the in-place write happens in ONNX Runtime)."""
    return buffer.index_copy(2, cache_position, new.to(buffer.dtype))


@cache_write.register_fake
def _cache_write_fake(
    buffer: torch.Tensor, new: torch.Tensor, cache_position: torch.Tensor
) -> torch.Tensor:
    return torch.empty_like(buffer)


def _cache_write_onnx(buffer: Any, new: Any, cache_position: Any) -> Any:
    """``TensorScatter`` at the first position of ``cache_position``, one index per row
    (every row writes at the same place: the batch is left-padded)."""
    from onnxscript import opset23 as op
    from onnxscript.values import Opset

    op24 = Opset("", STATIC_OPSET)
    start = op.Slice(cache_position, [0], [1])
    batch = op.Shape(buffer, start=0, end=1)
    return op24.TensorScatter(buffer, new, op.Expand(start, batch), axis=2)


#: what ``torch.onnx.export(custom_translation_table=)`` needs for a static export
TRANSLATION_TABLE = {torch.ops.diag.cache_write.default: _cache_write_onnx}


class BufferLayer(DynamicLayer):
    """One layer of a :class:`BufferCache`: a key and a value buffer of
    ``max_length`` positions, written at ``cache_position`` by ``cache_write``."""

    is_sliding = False
    is_compileable = True  # transformers then always builds the mask (no is_causal skip)

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, cache_position: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.cache_position = cache_position
        self.max_length = int(keys.shape[2])
        self.device = keys.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ):
        self.keys = cache_write(self.keys, key_states, self.cache_position)
        self.values = cache_write(self.values, value_states, self.cache_position)
        return self.keys, self.values

    def get_mask_sizes(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        # the mask spans the whole buffer, from its first position
        return self.max_length, 0

    def get_seq_length(self, *args: Any, **kwargs: Any) -> Any:
        # the positions before this step's (a tensor, as StaticLayer's)
        return self.cache_position[0]

    def get_max_length(self) -> int:
        return self.max_length

    def get_max_cache_shape(self) -> int:  # transformers 4.x's name
        return self.max_length


class BufferCache(Cache):
    """The cache a static step runs with: one :class:`BufferLayer` per layer."""

    def __init__(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]], cache_position: torch.Tensor
    ):
        super().__init__(layers=[BufferLayer(k, v, cache_position) for k, v in pairs])

    def get_query_offset(self, layer_idx: int = 0) -> Any:
        return self.layers[layer_idx].get_seq_length()


class StaticStep(torch.nn.Module):
    """One decoding step of ``model`` over buffers, with tensor inputs and outputs in
    the order of the static layout: ``input_ids``, ``attention_mask``,
    [``position_ids``], ``cache_position``, then ``past`` (key 0, value 0, key 1, ...);
    returns the logits then the written buffers in the same order."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.cache_name = cache_argument(model)
        self.pass_cache_position = CACHE_POSITION in forward_parameters(model)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache_position: torch.Tensor | None = None,
        past: list[torch.Tensor] | None = None,
        logits_to_keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        cache = BufferCache(list(zip(past[0::2], past[1::2], strict=True)), cache_position)
        kwargs: dict[str, Any] = {self.cache_name: cache, "use_cache": True}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if self.pass_cache_position:
            kwargs[CACHE_POSITION] = cache_position
        if logits_to_keep is not None:
            # the positions whose logits the graph computes (diag.export.make.logits_to_keep)
            kwargs["logits_to_keep"] = logits_to_keep
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return (out.logits, *[t for layer in cache.layers for t in (layer.keys, layer.values)])


def run_static_step(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None,
    cache_position: torch.Tensor,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The torch reference of one static step (what the export computes): the logits
    and the written buffers, key then value per layer.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> from diag.models.cache_layout import cache_layout
    >>> pairs = [(torch.zeros(k), torch.zeros(v)) for k, v in
    ...          ((l.key_shape(1, 8), l.value_shape(1, 8)) for l in cache_layout(model).layers)]
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> logits, buffers = run_static_step(model, ids, torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]]),
    ...     torch.arange(3)[None], torch.arange(3), pairs)
    >>> logits.shape, bool(buffers[0][0, :, 3:].abs().sum() == 0)
    (torch.Size([1, 3, 49152]), True)
    """
    flat = [t for pair in pairs for t in pair]
    with torch.no_grad():
        logits, *buffers = StaticStep(model)(
            input_ids, attention_mask, position_ids, cache_position, flat
        )
    return logits, buffers


__all__ = [
    "BufferCache",
    "BufferLayer",
    "CACHE_POSITION",
    "StaticStep",
    "TRANSLATION_TABLE",
    "cache_write",
    "run_static_step",
]
