"""The cache of exported models: a key per export, stored next to the model.

An export is reused when nothing that shapes it changed: the model class and config,
its weights (a hash of the state dict), the exporter, the opset, the export options
the versions of diag, torch, transformers, onnx, onnxscript and onnx-ir, and a hash
of diag's export code (so a changed patch or pass never reuses a stale model). The key
and the validation figures are stored in a JSON sidecar ``<model>.json`` written
after the model (so a model without a valid sidecar is never reused).

Default location: ``$DIAG_CACHE/onnx/<model-name>-<key>/model.onnx``
(``~/.cache/diag`` when ``DIAG_CACHE`` is not set).
Its size is kept within ``$DIAG_CACHE_MAX_GB`` by
:mod:`~diag.export.record.cache_eviction`.

Example::

    >>> import torch
    >>> key = export_key(torch.nn.Linear(2, 2), {"exporter": "onnx-dynamo"})
    >>> len(key)
    16
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

import diag
from diag.compat.versions import installed_version
from diag.helpers.atomic_write import write_text_atomically

SIDECAR_SUFFIX = ".json"
_PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnx-ir")


def cache_dir() -> str:
    """Root folder of diag's caches: ``$DIAG_CACHE`` or ``~/.cache/diag``
    (the same root as the model zoo's, :func:`diag.models.pretrained.cache_root`)."""
    # imported here: diag.models imports transformers, which `import diag.export` skips
    from diag.models.pretrained import cache_root

    return os.path.abspath(cache_root())


def versions() -> dict[str, str]:
    """Versions of diag and of the packages an export depends on."""
    found = {"diag": diag.__version__, "diag.export": export_code_hash()}
    for name in _PACKAGES:
        found[name] = installed_version(name) or "missing"
    return found


#: the packages whose code decides what an export writes: the exporter and the contract
_HASHED_PACKAGES = ("export", "contract")


def export_code_hash() -> str:
    """SHA-256 (16 hex digits) of the source files of :mod:`diag.export` and
    :mod:`diag.contract`.

    The version number of diag does not move with every change of a patch, an
    optimisation pass or a name of the contract; this hash does, so such a change
    invalidates cached exports.
    """
    diag_root = os.path.dirname(os.path.abspath(diag.__file__))
    digest = hashlib.sha256()
    for package in _HASHED_PACKAGES:
        for folder, dirs, files in sorted(os.walk(os.path.join(diag_root, package))):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as f:
                        digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def state_dict_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the names, dtypes, shapes and bytes of a model's parameters and
    buffers (a tensor shared by several names, such as tied weights, is read once)."""
    digest = hashlib.sha256()
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in sorted(model.state_dict(keep_vars=False).items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel() == 0:
            continue
        ident = (tensor.data_ptr(), tensor.numel(), tuple(tensor.stride()))
        if ident in seen:
            digest.update(f"same-as:{seen[ident]}".encode())
            continue
        seen[ident] = name
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(data.numpy()))
    return digest.hexdigest()


def _config_json(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is None:
        return ""
    content = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    # where the weights came from does not change the export
    for k in ("_name_or_path", "transformers_version", "_commit_hash"):
        content.pop(k, None)
    return json.dumps(content, sort_keys=True, default=str)


def export_key_parts(model: torch.nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Everything the key hashes, readable (stored in the sidecar)."""
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config_sha256": hashlib.sha256(_config_json(model).encode()).hexdigest(),
        "weights_sha256": state_dict_hash(model),
        "options": {k: options[k] for k in sorted(options)},
        "versions": versions(),
    }


def key_of_parts(parts: dict[str, Any]) -> str:
    """16 hexadecimal digits identifying an export."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export_key(model: torch.nn.Module, options: dict[str, Any]) -> str:
    """The key of exporting ``model`` with ``options`` (exporter, opset...)."""
    return key_of_parts(export_key_parts(model, options))


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
