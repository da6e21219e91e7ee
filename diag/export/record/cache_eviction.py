"""Keeps the export cache under a size budget: the least recently used exports go first.

Every change of diag's export code, of a release or of an option makes a new entry in
``$DIAG_CACHE/onnx`` (see :mod:`~diag.export.record.export_cache`), and a SmolLM2 export
weighs half a gigabyte: without a budget the cache fills a disk. After each export
written there, the oldest entries are removed until the cache fits
``$DIAG_CACHE_MAX_GB`` (default 20; ``inf`` keeps everything). An entry's last use is
its sidecar's modification time, which a reuse refreshes (:func:`mark_used`).

Example::

    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for name, size in [("old", 600), ("new", 600)]:
    ...     os.makedirs(os.path.join(root, name))
    ...     with open(os.path.join(root, name, "model.onnx"), "wb") as f:
    ...         _ = f.write(b"0" * size)
    ...     with open(os.path.join(root, name, "model.onnx.json"), "w") as f:
    ...         _ = f.write("{}")
    >>> os.utime(os.path.join(root, "old", "model.onnx.json"), (1, 1))
    >>> [os.path.basename(p) for p in evict(root, budget=1000)]
    ['old']
    >>> sorted(os.listdir(root))
    ['new']
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass

from diag.export.plan.export_key import cache_dir
from diag.export.record.export_cache import SIDECAR_SUFFIX

#: the variable holding the budget in gigabytes (10**9 bytes)
BUDGET_VARIABLE = "DIAG_CACHE_MAX_GB"
DEFAULT_BUDGET_GB = 20.0
#: an entry without a sidecar younger than this may be an export under way elsewhere
_IN_PROGRESS_SECONDS = 3600.0


@dataclass(frozen=True)
class CacheEntry:
    """One folder of the export cache: its size in bytes and when it was last used."""

    folder: str
    size: int
    last_used: float
    complete: bool


def budget_bytes() -> float:
    """The budget ``$DIAG_CACHE_MAX_GB`` in bytes (``math.inf`` for ``inf``).

    >>> budget_bytes() > 0
    True
    """
    text = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not text:
        return DEFAULT_BUDGET_GB * 1e9
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"{BUDGET_VARIABLE}={text!r} is not a size: write a positive number of "
            f"gigabytes (for example {BUDGET_VARIABLE}=20), or 'inf' to never remove exports."
        )
    return value * 1e9


def entries(root: str) -> list[CacheEntry]:
    """The entries of the cache folder ``root``, least recently used first."""
    found = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        size, newest, sidecar_time = 0, 0.0, None
        for parent, _, files in os.walk(folder):
            for file in files:
                try:
                    stat = os.stat(os.path.join(parent, file))
                except OSError:  # removed meanwhile by another process
                    continue
                size += stat.st_size
                newest = max(newest, stat.st_mtime)
                if parent == folder and file.endswith(SIDECAR_SUFFIX):
                    sidecar_time = max(sidecar_time or 0.0, stat.st_mtime)
        complete = sidecar_time is not None
        found.append(CacheEntry(folder, size, sidecar_time if complete else newest, complete))
    return sorted(found, key=lambda e: e.last_used)


def evict(root: str, keep: str | None = None, budget: float | None = None) -> list[str]:
    """Removes the least recently used entries of ``root`` until it fits ``budget`` bytes
    (default :func:`budget_bytes`); never ``keep`` (the entry just written or reused) nor
    an entry without a sidecar written in the last hour (an export under way). Returns
    the folders removed."""
    budget = budget_bytes() if budget is None else budget
    if math.isinf(budget):
        return []
    found = entries(root)
    total = sum(e.size for e in found)
    kept = os.path.abspath(keep) if keep else None
    removed = []
    now = time.time()
    for entry in found:
        if total <= budget:
            break
        if os.path.abspath(entry.folder) == kept:
            continue
        if not entry.complete and now - entry.last_used < _IN_PROGRESS_SECONDS:
            continue
        # renamed first (atomic): a half-removed folder never looks like an entry
        trash = os.path.join(root, f".removing-{uuid.uuid4().hex}")
        try:
            os.rename(entry.folder, trash)
        except OSError:  # removed or renamed by another process meanwhile
            continue
        shutil.rmtree(trash, ignore_errors=True)
        total -= entry.size
        removed.append(entry.folder)
    return removed


def exports_root() -> str:
    """The folder of cached exports, ``$DIAG_CACHE/onnx``."""
    return os.path.join(cache_dir(), "onnx")


def keep_within_budget(filename: str | os.PathLike) -> list[str]:
    """After ``filename`` was written or reused: when it lives in the export cache,
    removes the least recently used other entries beyond the budget (a file the user
    placed elsewhere is not the cache's to manage). Returns the folders removed."""
    folder = os.path.dirname(os.path.abspath(os.fspath(filename)))
    root = os.path.abspath(exports_root())
    if os.path.dirname(folder) != root:
        return []
    return evict(root, keep=folder)


def mark_used(filename: str | os.PathLike) -> None:
    """Refreshes the last use of the export ``filename`` (its sidecar's time; a file
    already ending with ``.json`` is the sidecar)."""
    path = os.fspath(filename)
    try:
        os.utime(path if path.endswith(SIDECAR_SUFFIX) else path + SIDECAR_SUFFIX)
    except OSError:  # a read-only cache still serves its exports
        pass


__all__ = [
    "BUDGET_VARIABLE",
    "CacheEntry",
    "budget_bytes",
    "entries",
    "evict",
    "exports_root",
    "keep_within_budget",
    "mark_used",
]
