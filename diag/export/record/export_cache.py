"""The record of an export in the cache of exported models: its key
(:mod:`diag.export.plan.export_key`) and its validation figures in a JSON sidecar
``<model>.json``, written after the model (so a model without a valid sidecar is never
reused), and the test that a file with a given key is there, whole.

Its size is kept within ``$DIAG_CACHE_MAX_GB`` by
:mod:`~diag.export.record.cache_eviction`.

Example::

    >>> sidecar_path("model.onnx")
    'model.onnx.json'
"""

from __future__ import annotations

import json
import os
from typing import Any

from diag.helpers.atomic_write import write_text_atomically

SIDECAR_SUFFIX = ".json"


def sidecar_path(filename: str | os.PathLike) -> str:
    """``model.onnx`` -> ``model.onnx.json``."""
    return os.fspath(filename) + SIDECAR_SUFFIX


def read_sidecar(filename: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of an exported model, None when missing or unreadable."""
    path = sidecar_path(filename)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_sidecar(filename: str | os.PathLike, content: dict[str, Any]) -> str:
    """Writes the sidecar atomically; returns its path."""
    text = json.dumps(content, indent=1, sort_keys=True, default=str)
    return write_text_atomically(sidecar_path(filename), text)


def is_cached(filename: str | os.PathLike, key: str) -> bool:
    """True when ``filename`` exists with a sidecar holding ``key`` and every file the
    sidecar lists (names relative to the model's folder: the ``.data`` file)."""
    if not os.path.exists(filename):
        return False
    side = read_sidecar(filename)
    if side is None or side.get("key") != key:
        return False
    folder = os.path.dirname(os.path.abspath(os.fspath(filename)))
    return all(os.path.exists(os.path.join(folder, f)) for f in side.get("files", []))
