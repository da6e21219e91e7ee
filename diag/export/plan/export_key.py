"""The key that names an export in the cache of exported models, made by the plan
before anything is traced.

An export is reused when nothing that shapes it changed: the model class and config,
its weights (a hash of the state dict), the exporter, the opset, the export options
the versions of diag, torch, transformers, onnx, onnxscript and onnx-ir, and a hash
of diag's export code (so a changed patch or pass never reuses a stale model). The
record stage stores the key in the export's sidecar
(:mod:`diag.export.record.export_cache`).

Default location: ``$DIAG_CACHE/onnx/<model-name>-<key>/model.onnx``
(``~/.cache/diag`` when ``DIAG_CACHE`` is not set).

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


__all__ = [
    "cache_dir",
    "export_code_hash",
    "export_key",
    "export_key_parts",
    "key_of_parts",
    "state_dict_hash",
    "versions",
]
