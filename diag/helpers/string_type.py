"""One-line description of nested inputs and outputs: :func:`string_type`.

Printing a model's inputs or outputs (tensors, caches, dictionaries of them) takes
pages; :func:`string_type` summarises them on one line with the notation below.

Tensors
    ``T`` + ONNX element type + ``s`` + shape joined by ``x``: ``T7s1x123`` is an int64
    torch tensor of shape ``(1, 123)``. Without ``with_shape`` the rank replaces the
    shape: ``T7r2``. A rank-0 tensor is ``T1s`` (empty shape). numpy arrays use the
    prefix ``A`` (``A1s2x3``), onnxruntime ``OrtValue`` tensors ``OT`` (``OT10s1x8``).

    ONNX element types (``onnx.TensorProto``): 1 FLOAT, 2 UINT8, 3 INT8, 4 UINT16,
    5 INT16, 6 INT32, 7 INT64, 8 STRING, 9 BOOL, 10 FLOAT16, 11 DOUBLE, 12 UINT32,
    13 UINT64, 14 COMPLEX64, 15 COMPLEX128, 16 BFLOAT16, 17-20 the FLOAT8 types.

Statistics (``with_min_max=True``)
    ``[min,max:Amean]`` follows the tensor: ``T7s1x123[7,50285:A10138.88]``. Integer and
    boolean tensors show min and max as integers; floating values are written with 7
    significant digits (``format(x, ".7g")``: ``0.1234568``, ``10138.88``, ``1e-08``,
    ``inf``). NaN values are left out of min, max and mean and counted at the end:
    ``T1s4[0.5,2:A1.25:N2nan]`` (all NaN: ``[nan,nan:Anan:N4nan]``). An empty tensor is
    ``T1s0x4[empty]``. Python numbers show their value: ``int=5``, ``float=0.5``,
    ``bool=True`` (without statistics: ``int``, ``float``, ``bool``).

Containers
    * list: ``#N[...]`` with its N elements, all of them: ``#2[T1s2,T1s3]``, ``#0[]``
    * tuple: ``(...)``: ``(T1s2,T7s2)``, one element: ``(T1s2,)``; a named tuple or
      another tuple subclass is prefixed by its class name, ``torch.Size`` prints its
      values: ``Size(1,3)``
    * dict: ``dict(key:value,...)``: ``dict(input_ids:T7s1x3,attention_mask:T7s1x8)``;
      other mappings use their class name, transformers ``ModelOutput`` included (its
      ``None`` fields are omitted): ``CausalLMOutputWithPast(logits:T1s1x3x49152,...)``
    * ``None``: ``None``; a string: ``str``; ``torch.float16``: ``torch.float16``; a
      device: ``device(cpu)``.

Caches (transformers)
    The class name, then the keys and values of every layer, all of them:
    ``DynamicCache(key_cache=#2[T1s1x3x21x64,T1s1x3x21x64], value_cache=#2[T1s1x3x21x64,T1s1x3x21x64])``.
    StaticCache and other layered caches print the same way (a layer not filled yet is
    ``None``); an encoder-decoder cache prints its two caches:
    ``EncoderDecoderCache(self_attention_cache=DynamicCache(...), cross_attention_cache=DynamicCache(...))``.

Anything else
    Its class name: ``LlamaForCausalLM``.

Example::

    >>> import torch
    >>> from diag.helpers.string_type import string_type
    >>> string_type({"input_ids": torch.ones((1, 3), dtype=torch.int64)}, with_shape=True)
    'dict(input_ids:T7s1x3)'
    >>> string_type(torch.arange(7, dtype=torch.int64), with_min_max=True)
    'T7r1[0,6:A3]'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from diag.helpers.dtypes import numpy_dtype_to_onnx_dtype, torch_dtype_to_onnx_dtype


def _fmt(value: float, integral: bool) -> str:
    if integral:
        return str(int(value))
    return format(float(value), ".7g")


def _stats(values: np.ndarray | torch.Tensor) -> str:
    """``[min,max:Amean]`` of a torch tensor or numpy array ("" when it has no values)."""
    if isinstance(values, torch.Tensor):
        if values.numel() == 0:
            return "[empty]"
        if values.device.type == "meta" or values.is_complex():
            return ""
        try:
            return _torch_stats(values.detach())
        except RuntimeError:  # fake tensors (inside torch.export) have no values
            return ""
    if values.size == 0:
        return "[empty]"
    try:
        if values.dtype.kind in "biu":
            return _torch_stats(torch.from_numpy(np.asarray(values, dtype=np.int64)))
        # the second test covers ml_dtypes' bfloat16 / float8 too, which numpy knows as
        # kind "V"; it raises a ValueError for a dtype without an ONNX element type
        if values.dtype.kind == "f" or numpy_dtype_to_onnx_dtype(values.dtype):
            return _torch_stats(torch.from_numpy(np.asarray(values, dtype=np.float64)))
    except (TypeError, ValueError):
        pass
    return ""


def _torch_stats(t: torch.Tensor) -> str:
    integral = not t.is_floating_point()
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    n_nan = 0
    if not integral:
        nan = torch.isnan(t)
        n_nan = int(nan.sum())
        if n_nan:
            t = t[~nan]
    if t.numel() == 0:
        text = "nan,nan:Anan"
    else:
        # float64 for the mean: a float16 sum overflows, an int64 one loses the fraction
        text = (
            f"{_fmt(t.min().item(), integral)},{_fmt(t.max().item(), integral)}"
            f":A{_fmt(t.to(torch.float64).mean().item(), False)}"
        )
    return f"[{text}:N{n_nan}nan]" if n_nan else f"[{text}]"


def _shape(shape: tuple[Any, ...], with_shape: bool) -> str:
    if with_shape:
        return "s" + "x".join(str(d) for d in shape)
    return f"r{len(shape)}"


def _torch_code(dtype: torch.dtype) -> str:
    try:
        return str(torch_dtype_to_onnx_dtype(dtype))
    except ValueError:
        return str(dtype).replace("torch.", "")


def _numpy_code(dtype: np.dtype) -> str:
    if dtype.kind in "SU":
        return "8"  # ONNX STRING, whatever the width numpy gives the strings
    try:
        return str(numpy_dtype_to_onnx_dtype(dtype))
    except ValueError:
        return dtype.name


def _is_ortvalue(obj: Any) -> bool:
    cls = type(obj)
    return cls.__name__ == "OrtValue" and cls.__module__.startswith("onnxruntime")


def _ortvalue(obj: Any, with_shape: bool, with_min_max: bool) -> str:
    if not obj.is_tensor():
        return "OrtValue"
    text = f"OT{obj.element_type()}{_shape(tuple(obj.shape()), with_shape)}"
    if with_min_max:
        try:
            text += _stats(obj.numpy())
        except Exception:  # noqa: BLE001 - a tensor ORT cannot copy (device, type) has no stats
            pass
    return text


def _is_model_output(obj: Any) -> bool:
    # checked by name so that string_type does not import transformers for plain tensors
    return any(
        c.__name__ == "ModelOutput" and c.__module__.startswith("transformers")
        for c in type(obj).__mro__
    )


def _is_cache(obj: Any) -> bool:
    return any(
        c.__name__ == "Cache" and c.__module__.startswith("transformers") for c in type(obj).__mro__
    )


def string_type(obj: Any, with_shape: bool = False, with_min_max: bool = False) -> str:
    """Describes ``obj`` (tensors, arrays, OrtValues, caches and any nesting of lists,
    tuples and dicts of them) on one line; the notation is described in
    :mod:`diag.helpers.string_type`.

    :param obj: anything
    :param with_shape: write the shapes (``T1s2x3``) instead of the ranks (``T1r2``)
    :param with_min_max: append ``[min,max:Amean]`` to every tensor and the value to
        every python number
    :return: the description; it never raises for an unknown object (its class name
        is used)

    >>> import torch
    >>> from diag.helpers.cache_helper import make_dynamic_cache
    >>> k = torch.zeros(1, 3, 21, 64)
    >>> string_type(make_dynamic_cache([(k, k)]), with_shape=True)
    'DynamicCache(key_cache=#1[T1s1x3x21x64], value_cache=#1[T1s1x3x21x64])'
    >>> string_type([torch.zeros(2, dtype=torch.float16), (1, None)], with_min_max=True)
    '#2[T10r1[0,0:A0],(int=1,None)]'
    """

    def rec(o: Any) -> str:
        return string_type(o, with_shape=with_shape, with_min_max=with_min_max)

    if obj is None:
        return "None"
    if isinstance(obj, torch.Tensor):
        text = f"T{_torch_code(obj.dtype)}{_shape(tuple(obj.shape), with_shape)}"
        return text + _stats(obj) if with_min_max else text
    if isinstance(obj, np.ndarray):
        text = f"A{_numpy_code(obj.dtype)}{_shape(obj.shape, with_shape)}"
        return text + _stats(obj) if with_min_max else text
    if _is_ortvalue(obj):
        return _ortvalue(obj, with_shape, with_min_max)
    if isinstance(obj, bool):
        return f"bool={obj}" if with_min_max else "bool"
    if isinstance(obj, (int, np.integer)):
        return f"int={int(obj)}" if with_min_max else "int"
    if isinstance(obj, (float, np.floating)):
        return f"float={_fmt(obj, False)}" if with_min_max else "float"
    if isinstance(obj, str):
        return "str"
    if isinstance(obj, torch.dtype):
        return str(obj)
    if isinstance(obj, torch.device):
        return f"device({obj})"
    if _is_cache(obj):
        # imported here: cache_helper imports transformers, which diag.helpers skips
        from diag.helpers.cache_helper import cache_parts

        try:
            parts = cache_parts(obj)
        except TypeError:  # a cache class without layers: its name is all we can say
            return type(obj).__name__
        inner = ", ".join(f"{k}={rec(v)}" for k, v in parts.items())
        return f"{type(obj).__name__}({inner})"
    if isinstance(obj, Mapping):
        name = "dict" if type(obj) is dict else type(obj).__name__
        items = obj.items()
        if _is_model_output(obj):
            items = [(k, v) for k, v in items if v is not None]
        return f"{name}(" + ",".join(f"{k}:{rec(v)}" for k, v in items) + ")"
    if isinstance(obj, torch.Size):
        return "Size(" + ",".join(str(d) for d in obj) + ")"
    if isinstance(obj, tuple):
        inner = ",".join(rec(v) for v in obj)
        if len(obj) == 1:
            inner += ","
        return f"({inner})" if type(obj) is tuple else f"{type(obj).__name__}({inner})"
    if isinstance(obj, list):
        return f"#{len(obj)}[" + ",".join(rec(v) for v in obj) + "]"
    return type(obj).__name__


__all__ = ["string_type"]
