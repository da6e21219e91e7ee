"""Small torch utilities: recursive conversion (:func:`to_any`) and the dtype of a
model's weights (:func:`get_weight_type`). The dtype conversions between torch, numpy
and ONNX live in :mod:`diag.helpers.dtypes`.

Example::

    >>> import torch
    >>> from diag.helpers.torch_helper import to_any
    >>> inputs = {"input_ids": torch.tensor([[1, 2]]), "scale": torch.tensor([0.5])}
    >>> {k: v.dtype for k, v in to_any(inputs, torch.float16).items()}
    {'input_ids': torch.int64, 'scale': torch.float16}
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from diag.helpers.dtypes import torch_dtype_to_numpy_dtype


def _parse_target(dtype_or_device: Any) -> torch.dtype | torch.device:
    if isinstance(dtype_or_device, (torch.dtype, torch.device)):
        target = dtype_or_device
    elif isinstance(dtype_or_device, str):
        attr = getattr(torch, dtype_or_device, None)
        if isinstance(attr, torch.dtype):
            target = attr
        else:
            try:
                target = torch.device(dtype_or_device)
            except RuntimeError:
                raise ValueError(
                    f"to_any: {dtype_or_device!r} is neither a torch dtype name "
                    "('float16', 'bfloat16', ...) nor a device ('cpu', 'cuda:0', ...)."
                ) from None
    else:
        raise TypeError(
            "to_any expects a torch.dtype, a torch.device or their name as a string, "
            f"got {type(dtype_or_device).__name__}."
        )
    if isinstance(target, torch.dtype) and not target.is_floating_point:
        raise ValueError(
            f"to_any converts floating tensors only and keeps integer ones (input_ids, masks) "
            f"as they are; got the non-floating dtype {target}. Use a floating dtype."
        )
    return target


def _convert_tensor(t: torch.Tensor, target: torch.dtype | torch.device) -> torch.Tensor:
    if isinstance(target, torch.device):
        return t.to(target)
    return t.to(target) if t.is_floating_point() else t


def _to_any(obj: Any, target: torch.dtype | torch.device) -> Any:
    # imported here: cache_helper imports transformers, which torch_helper users may not need
    from diag.helpers.cache_helper import is_cache, map_cache_tensors

    if isinstance(obj, torch.Tensor):
        return _convert_tensor(obj, target)
    if obj is None or isinstance(obj, (bool, int, float, str, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, np.ndarray):
        # numpy lives on the CPU; only a floating dtype numpy knows can be applied
        if isinstance(target, torch.dtype) and obj.dtype.kind == "f":
            try:
                return obj.astype(torch_dtype_to_numpy_dtype(target))
            except ValueError:  # bfloat16, float8: numpy has no such dtype of its own
                return obj
        return obj
    if is_cache(obj):
        return map_cache_tensors(obj, lambda t, _name: _convert_tensor(t, target))
    if isinstance(obj, torch.nn.Module):
        return obj.to(target)
    if isinstance(obj, Mapping):
        converted = {k: _to_any(v, target) for k, v in obj.items()}
        if type(obj) is dict:
            return converted
        try:
            # ModelOutput, BatchEncoding, OrderedDict... accept their items back
            return type(obj)(**converted) if _is_model_output(obj) else type(obj)(converted)
        except TypeError:
            return converted
    if isinstance(obj, tuple):
        items = [_to_any(v, target) for v in obj]
        if type(obj) is tuple:
            return tuple(items)
        if hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*items)
        return type(obj)(items)
    if isinstance(obj, list):
        return [_to_any(v, target) for v in obj]
    return obj


def _is_model_output(obj: Any) -> bool:
    try:
        from transformers.utils import ModelOutput
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(obj, ModelOutput)


def to_any(obj: Any, dtype_or_device: torch.dtype | torch.device | str) -> Any:
    """Converts, recursively, every tensor of ``obj`` to a floating dtype or a device.

    :param obj: a tensor, or any nesting of lists, tuples, dicts, transformers
        ``ModelOutput``, transformers caches (DynamicCache, StaticCache,
        EncoderDecoderCache...), numpy arrays and python scalars
    :param dtype_or_device: a floating ``torch.dtype`` (``torch.float16``...), a
        ``torch.device`` or the name of either (``"bfloat16"``, ``"cuda:0"``)
    :return: the same structure, containers of the same classes, caches of the same
        class with the same layer classes; ``obj`` itself is left unchanged except for an
        ``nn.Module``, which is converted in place by ``module.to``.

    A dtype only changes floating tensors: ``input_ids``, masks and positions stay int64.
    numpy arrays follow a dtype conversion (when numpy has that dtype) and stay where they
    are on a device conversion; anything else is returned as it is.

    >>> import torch
    >>> from diag.helpers.cache_helper import make_dynamic_cache
    >>> k = torch.zeros(1, 2, 3, 4)
    >>> out = to_any({"input_ids": torch.tensor([[1]]), "cache": make_dynamic_cache([(k, k)])},
    ...              "float16")
    >>> out["input_ids"].dtype, type(out["cache"]).__name__, out["cache"].layers[0].keys.dtype
    (torch.int64, 'DynamicCache', torch.float16)
    """
    return _to_any(obj, _parse_target(dtype_or_device))


def get_weight_type(model: torch.nn.Module) -> torch.dtype:
    """Returns the floating dtype holding most of the model's parameters (counted in
    elements, so that a few float32 norms do not outvote a bfloat16 model).

    :param model: any torch module

    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4).half(), torch.nn.LayerNorm(4))
    >>> get_weight_type(m)
    torch.float16
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"get_weight_type expects a torch.nn.Module, got {type(model).__name__}.")
    counts: Counter[torch.dtype] = Counter()
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] += p.numel()
    if not counts:
        raise ValueError(
            f"get_weight_type: {type(model).__name__} has no floating parameters, "
            "so it has no weight type."
        )
    return counts.most_common(1)[0][0]


__all__ = ["get_weight_type", "single_torch_thread", "to_any"]


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Runs the block with one torch intra-op thread, then restores the setting.

    Between two ONNX Runtime steps the loop runs small torch ops on ``[batch, vocab]``
    logits (processors, argmax, eos checks). With several torch threads, OpenMP's
    workers spin-wait after each op and take cores from ONNX Runtime's own threads,
    which slows the decode down (``bench/bench_onnx_generate.py`` measures it). The
    torch ops themselves are too small to gain from threads.

    >>> with single_torch_thread():
    ...     torch.get_num_threads()
    1
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
