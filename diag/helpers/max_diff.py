"""How far apart two nested results are: :func:`max_diff`.

It compares what a reference produced (``expected``: usually the torch model's outputs)
with what another runtime produced (``got``: onnxruntime's outputs, a float16 model's...),
whatever they are made of: torch tensors, numpy arrays, onnxruntime ``OrtValue``-s,
python numbers, transformers caches and ``ModelOutput``-s, lists, tuples and dicts.

Example::

    >>> import torch
    >>> from diag.helpers.max_diff import max_diff
    >>> expected = {"logits": torch.zeros(1, 2, 3)}
    >>> got = {"logits": torch.zeros(1, 2, 3)}
    >>> got["logits"][0, 1, 2] = 0.5
    >>> d = max_diff(expected, got)
    >>> d["abs"], d["n"], d["argm"]
    (0.5, 6, ('logits', (0, 1, 2)))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from diag.helpers.dtypes import onnx_dtype_to_torch_dtype
from diag.helpers.string_type import _is_cache, _is_model_output, _is_ortvalue, string_type

_LEAF_NUMBERS = (bool, int, float, np.generic)


def _is_leaf(obj: Any) -> bool:
    return isinstance(obj, (torch.Tensor, np.ndarray, *_LEAF_NUMBERS)) or _is_ortvalue(obj)


def _dtype_name(obj: Any) -> str | None:
    if isinstance(obj, torch.Tensor):
        return str(obj.dtype).replace("torch.", "")
    if isinstance(obj, np.ndarray):
        return obj.dtype.name
    if _is_ortvalue(obj):
        try:
            return str(onnx_dtype_to_torch_dtype(obj.element_type())).replace("torch.", "")
        except ValueError:
            return obj.data_type()
    return None  # python numbers take the dtype of the other side


def _flat_values(obj: Any) -> torch.Tensor:
    """The values of a leaf as a 1-D CPU tensor, in their own dtype when torch has it
    (cast to float64 chunk by chunk later, to keep memory bounded)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().reshape(-1).cpu()
    if _is_ortvalue(obj):
        obj = obj.numpy()
    if isinstance(obj, np.ndarray):
        flat = np.ascontiguousarray(obj).reshape(-1)
        try:
            return torch.from_numpy(flat)
        except TypeError:  # a dtype torch does not share (ml_dtypes' bfloat16...)
            return torch.from_numpy(flat.astype(np.float64))
    return torch.tensor([float(obj)], dtype=torch.float64)


# values compared at once: bounds the float64 temporaries to a few tens of MB
_CHUNK = 1 << 20


def _shape(obj: Any) -> tuple[int, ...]:
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, np.ndarray):
        return tuple(obj.shape)
    if _is_ortvalue(obj):
        return tuple(obj.shape())
    return ()


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _items(obj: Any) -> list[tuple[Any, Any]]:
    """Named children of a mapping (ModelOutput: only the fields that are set)."""
    items = list(obj.items())
    if _is_model_output(obj):
        items = [(k, v) for k, v in items if v is not None]
    return items


def _flatten(obj: Any, path: str) -> list[tuple[str, Any]]:
    """Leaves of a nested structure, in the order an exporter flattens them (a cache
    layer by layer, key then value)."""
    if obj is None:
        return []
    if _is_leaf(obj):
        return [(path, obj)]
    if _is_cache(obj):
        # imported here: cache_helper imports transformers, which diag.helpers skips
        from diag.helpers.cache_helper import cache_leaves

        return [(p, t) for p, t in cache_leaves(obj, path) if t is not None]
    if isinstance(obj, Mapping):
        return [leaf for k, v in _items(obj) for leaf in _flatten(v, _join(path, k))]
    if isinstance(obj, (list, tuple)):
        return [leaf for i, v in enumerate(obj) for leaf in _flatten(v, _join(path, i))]
    return [(path, obj)]


def _kind(obj: Any) -> str:
    if obj is None:
        return "None"
    if _is_leaf(obj):
        return "leaf"
    if _is_cache(obj):
        return f"cache:{type(obj).__name__}"
    if isinstance(obj, Mapping):
        return "mapping"
    if isinstance(obj, (list, tuple)):
        return "sequence"
    return f"other:{type(obj).__name__}"


class _Walker:
    def __init__(self, rtol_floor: float):
        self.rtol_floor = rtol_floor
        self.abs = 0.0
        self.rel = 0.0
        self.sum = 0.0
        self.n = 0
        self.dnan = 0
        self.argm: tuple[str, tuple[int, ...]] | None = None
        self.mismatches: list[str] = []
        self.dtypes: list[str] = []

    def _where(self, path: str) -> str:
        return path or "<root>"

    def leaf(self, e: Any, g: Any, path: str) -> None:
        se, sg = _shape(e), _shape(g)
        if se != sg:
            self.mismatches.append(
                f"{self._where(path)}: shape {se} expected, got {sg} "
                f"({string_type(e, with_shape=True)} vs {string_type(g, with_shape=True)})"
            )
            return
        de, dg = _dtype_name(e), _dtype_name(g)
        if de is not None and dg is not None and de != dg:
            self.dtypes.append(f"{self._where(path)}: dtype {de} expected, got {dg}")
        try:
            fe, fg = _flat_values(e), _flat_values(g)
        except (TypeError, ValueError, RuntimeError) as exc:
            self.mismatches.append(f"{self._where(path)}: cannot compare values ({exc})")
            return
        n = fe.numel()
        if n == 0:
            return
        self.n += n
        for start in range(0, n, _CHUNK):
            self._chunk(fe[start : start + _CHUNK], fg[start : start + _CHUNK], start, se, path)

    def _chunk(self, ce: torch.Tensor, cg: torch.Tensor, start: int, shape, path: str) -> None:
        te, tg = ce.to(torch.float64), cg.to(torch.float64)
        nan_e, nan_g = torch.isnan(te), torch.isnan(tg)
        self.dnan += int((nan_e != nan_g).sum())
        diff = (te - tg).abs_()
        # equal values (both +inf, say) and NaN positions (counted above) add no difference
        diff.masked_fill_((te == tg) | nan_e | nan_g, 0.0)
        self.sum += float(diff.sum())
        flat = int(diff.argmax())
        worst = float(diff[flat])
        if worst > self.abs:
            self.abs = worst
            index = tuple(int(i) for i in np.unravel_index(start + flat, shape))
            self.argm = (path, index)
        # inf / inf (an infinite expected value missed) is infinitely wrong, not NaN
        rel = torch.nan_to_num(diff / (te.abs() + self.rtol_floor), nan=math.inf)
        rel.masked_fill_(diff == 0, 0.0)
        self.rel = max(self.rel, float(rel.max()))

    def walk(self, e: Any, g: Any, path: str) -> None:
        ke, kg = _kind(e), _kind(g)
        if ke == "None" or kg == "None":
            if ke != kg:
                self.mismatches.append(
                    f"{self._where(path)}: {string_type(e, with_shape=True)} expected, "
                    f"got {string_type(g, with_shape=True)}"
                )
            return
        if ke == "leaf" and kg == "leaf":
            self.leaf(e, g, path)
            return
        if ke == "leaf" or kg == "leaf" or ke.startswith("other") or kg.startswith("other"):
            if isinstance(e, str) or isinstance(g, str):
                if e != g:
                    self.mismatches.append(f"{self._where(path)}: {e!r} expected, got {g!r}")
                return
            if type(e) is not type(g):
                self.mismatches.append(
                    f"{self._where(path)}: type {type(e).__name__} expected, got {type(g).__name__}"
                )
            return
        if ke == kg == "mapping":
            ie, ig = dict(_items(e)), dict(_items(g))
            missing = [k for k in ie if k not in ig]
            extra = [k for k in ig if k not in ie]
            if missing or extra:
                self.mismatches.append(
                    f"{self._where(path)}: keys differ, missing {missing}, unexpected {extra}"
                )
            for k, v in ie.items():
                if k in ig:
                    self.walk(v, ig[k], _join(path, k))
            return
        if ke == kg == "sequence":
            if len(e) != len(g):
                self.mismatches.append(
                    f"{self._where(path)}: length {len(e)} expected, got {len(g)}"
                )
                return
            for i, (a, b) in enumerate(zip(e, g, strict=True)):
                self.walk(a, b, _join(path, i))
            return
        if ke.startswith("cache:") and kg.startswith("cache:"):
            # imported here: cache_helper imports transformers, which diag.helpers skips
            from diag.helpers.cache_helper import cache_to_list

            try:
                le, lg = len(cache_to_list(e)), len(cache_to_list(g))
            except TypeError:
                le = lg = 0
            if le != lg:
                self.mismatches.append(f"{self._where(path)}: {le} cache layers expected, got {lg}")
                return
        # different containers (a cache against the flat list onnxruntime returns,
        # a ModelOutput against a tuple...): compare their leaves in flattening order
        fe, fg = _flatten(e, path), _flatten(g, path)
        if len(fe) != len(fg):
            self.mismatches.append(
                f"{self._where(path)}: {len(fe)} tensors expected ({string_type(e, with_shape=True)}), "
                f"got {len(fg)} ({string_type(g, with_shape=True)})"
            )
            return
        for (p, a), (_, b) in zip(fe, fg, strict=True):
            self.walk(a, b, p)


def max_diff(expected: Any, got: Any, *, rtol_floor: float = 1e-6) -> dict[str, Any]:
    """Walks two nested structures side by side and measures how far apart their values are.

    :param expected: the reference (torch tensors, numpy arrays, ``OrtValue``-s, python
        numbers, transformers caches and ``ModelOutput``-s, in any nesting of lists,
        tuples and dicts)
    :param got: what to compare with it; containers of another kind are compared leaf by
        leaf in flattening order (a ``DynamicCache`` gives ``key 0, value 0, key 1, ...``,
        the order of the ``present.*`` outputs of an exported model), so a
        ``CausalLMOutputWithPast`` compares with onnxruntime's list of outputs
    :param rtol_floor: added to ``|expected|`` in the relative difference
    :return: a dict

        * ``abs``: max ``|expected - got|``; ``inf`` when ``mismatches`` is not empty
          or when ``dnan > 0``, so that ``d["abs"] <= tol`` is a complete check
        * ``rel``: max ``|expected - got| / (|expected| + rtol_floor)``, ``inf`` in the
          same cases
        * ``abs_compared``, ``rel_compared``: the same maxima over the values actually
          compared (mismatched parts and NaN positions left out)
        * ``avg``: mean absolute difference over the compared values
        * ``n``: number of values compared
        * ``argm``: ``(path, index)`` of the largest absolute difference, e.g.
          ``("past_key_values.key_cache[3]", (0, 1, 2, 5))`` or ``("[2]", (0, 7))``;
          ``None`` when no value differs
        * ``dnan``: number of positions NaN on one side only
        * ``mismatches``: structural differences (shape, length, keys, type), each a
          message naming its path; these parts are not compared. Nothing is raised.
        * ``dtypes``: dtype differences (the values are compared anyway, both sides
          cast to float64)

    Two NaNs at the same position count as equal, so do two infinities of the same sign.

    >>> import torch
    >>> d = max_diff([torch.ones(2, 3), 1.0], [torch.ones(2, 3), 1.25])
    >>> d["abs"], d["argm"], d["mismatches"]
    (0.25, ('[1]', ()), [])
    >>> max_diff([torch.ones(2)], [torch.ones(3)])["mismatches"]
    ['[0]: shape (2,) expected, got (3,) (T1s2 vs T1s3)']
    """
    walker = _Walker(rtol_floor)
    walker.walk(expected, got, "")
    broken = bool(walker.mismatches) or walker.dnan > 0
    return {
        "abs": math.inf if broken else walker.abs,
        "rel": math.inf if broken else walker.rel,
        "abs_compared": walker.abs,
        "rel_compared": walker.rel,
        "avg": walker.sum / walker.n if walker.n else 0.0,
        "n": walker.n,
        "argm": walker.argm,
        "dnan": walker.dnan,
        "mismatches": walker.mismatches,
        "dtypes": walker.dtypes,
    }


__all__ = ["max_diff"]
