"""The inputs of :func:`~diag.diagnose.layers.localize_layer`: the caller's dict (or
``input_ids`` tensor) completed into the torch model's keyword arguments, and the
same values as the ONNX model's feeds.

>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=16,
...     intermediate_size=32, num_attention_heads=2, num_key_value_heads=2, vocab_size=20))
>>> feeds = normalize_inputs(torch.tensor([[1, 2, 3]]), model)
>>> feeds["attention_mask"].tolist(), feeds["position_ids"].tolist()
([[1, 1, 1]], [[0, 1, 2]])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from diag.compat.transformers_api import cache_input, require_cache_argument
from diag.contract.feeds import step_feeds
from diag.contract.positions import position_ids
from diag.generation.decoding import check_token_ids
from diag.generation.torch_backend import model_vocab_size
from diag.helpers.cache_helper import cache_to_list, is_cache, make_dynamic_cache
from diag.helpers.dtypes import onnx_dtype_to_numpy_dtype
from diag.models.cache_layout import cache_layout


def normalize_inputs(inputs: Any, model: torch.nn.Module) -> dict[str, Any]:
    """``input_ids``, ``attention_mask``, ``position_ids`` and the cache (when given),
    under the names the model's forward takes: a missing mask is all ones, missing
    positions follow the mask (left padding starts at 0), a cache given as a list of
    ``(key, value)`` pairs becomes a ``DynamicCache``."""
    if isinstance(inputs, torch.Tensor):
        inputs = {"input_ids": inputs}
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        raise TypeError(
            "localize_layer expects `inputs` as a dict with at least 'input_ids' (and optionally "
            "'attention_mask', 'position_ids' and the cache: 'cache' or 'past_key_values'), "
            "or an input_ids tensor; got "
            f"{type(inputs).__name__}."
        )
    ids = inputs["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
        raise ValueError("inputs['input_ids'] must be a 2D int64 tensor [batch, seq].")
    check_token_ids(ids, model_vocab_size(model))
    feeds: dict[str, Any] = {"input_ids": ids.to(torch.int64)}
    past = cache_input(inputs)
    past_len = 0
    if past is not None:
        if not is_cache(past):
            past = make_dynamic_cache(list(past))
        past_len = cache_to_list(past)[0][0].shape[2] if cache_to_list(past) else 0
        # under the name the model's forward takes, whichever the caller used
        feeds[require_cache_argument(model, "localize_layer")] = past
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones(ids.shape[0], past_len + ids.shape[1], dtype=torch.int64)
    feeds["attention_mask"] = mask.to(torch.int64)
    pos = inputs.get("position_ids")
    if pos is None:
        pos = position_ids(feeds["attention_mask"], new=ids.shape[1])
    feeds["position_ids"] = pos.to(torch.int64)
    return feeds


def onnx_feeds(
    model_ir: ir.Model, feeds: dict[str, Any], model: torch.nn.Module
) -> dict[str, np.ndarray]:
    """The ONNX model's feeds (:func:`diag.contract.feeds.step_feeds`) from
    :func:`normalize_inputs`'s: the ids, mask and positions, then the cache tensors
    (key 0, value 0, key 1...), each cast to the graph input's element type; no cache
    means the prefill's empty past, of the shapes of the model's own cache. A graph
    taking ``logits_to_keep`` is asked for every position (the torch side computes them
    all)."""
    graph = model_ir.graph
    input_types = {
        v.name: onnx_dtype_to_numpy_dtype(int(v.dtype))
        for v in graph.inputs
        if v.name not in graph.initializers
    }
    past = cache_input(feeds)
    pairs = cache_to_list(past) if past is not None else []
    if not pairs:
        pairs = cache_layout(model).random_pairs(feeds["input_ids"].shape[0], 0)
    return step_feeds(
        input_types,
        feeds["input_ids"],
        feeds["attention_mask"],
        feeds["position_ids"],
        cache=[t for kv in pairs for t in kv],
        complete=True,
    )


__all__ = ["normalize_inputs", "onnx_feeds"]
