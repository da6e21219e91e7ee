"""Helpers shared by the whole library: describe (:func:`string_type`), compare
(:func:`~diag.helpers.max_diff.max_diff`), convert (:func:`to_any`, :func:`get_weight_type`, the dtype table
of :mod:`diag.helpers.dtypes`) and build caches (:func:`make_dynamic_cache`,
:func:`~diag.helpers.cache_helper.cache_to_list`...).

The cache helpers are resolved lazily so that importing the others does not import
transformers::

    >>> from diag.helpers import string_type
    >>> import torch
    >>> string_type(torch.zeros(2, 3), with_shape=True)
    'T1s2x3'
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported eagerly: two modules carry the name of their function, and a lazy name would
# be shadowed by the submodule once `diag.helpers.string_type` is imported.
from diag.helpers.dtypes import onnx_dtype_to_torch_dtype, torch_dtype_to_onnx_dtype
from diag.helpers.max_diff import max_diff
from diag.helpers.string_type import string_type
from diag.helpers.torch_helper import get_weight_type, to_any

# public name -> module that defines it (these import transformers)
_LAZY: dict[str, str] = {
    "is_cache": "diag.helpers.cache_helper",
    "make_dynamic_cache": "diag.helpers.cache_helper",
    "make_static_cache": "diag.helpers.cache_helper",
    "make_encoder_decoder_cache": "diag.helpers.cache_helper",
    "cache_to_list": "diag.helpers.cache_helper",
    "cache_parts": "diag.helpers.cache_helper",
    "cache_leaves": "diag.helpers.cache_helper",
    "map_cache_tensors": "diag.helpers.cache_helper",
}

__all__ = [
    "cache_leaves",
    "cache_parts",
    "cache_to_list",
    "get_weight_type",
    "is_cache",
    "make_dynamic_cache",
    "make_encoder_decoder_cache",
    "make_static_cache",
    "map_cache_tensors",
    "max_diff",
    "onnx_dtype_to_torch_dtype",
    "string_type",
    "to_any",
    "torch_dtype_to_onnx_dtype",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diag.helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
