"""The manifest of a cached model folder: the size and hashes of each file, written
after a build and checked before each load.

The quick check (:func:`verify_model_folder`) compares sizes and a hash of sampled
blocks (milliseconds whatever the size); ``full=True`` hashes every file whole.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "config.json").write_text("{}")
>>> write_manifest(folder, {"name": "example"}, progress=False)
>>> verify_model_folder(folder)
[]
>>> _ = (folder / "config.json").write_text("{ }")
>>> verify_model_folder(folder)
['config.json has 3 bytes, expected 2']
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from diag.helpers.atomic_write import write_text_atomically

MANIFEST = "diag_manifest.json"
_MANIFEST_FORMAT = 1
# files smaller than this are hashed whole by the quick check; bigger ones are sampled
_SAMPLE_BLOCK = 1 << 16
_SAMPLE_COUNT = 32


def sha256_file(path: Path, progress: bool = False, desc: str = "") -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        tqdm(total=size, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar,
    ):
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _sample_sha256(path: Path) -> str:
    """Hash of the size and of evenly spaced blocks (first and last included): reads a
    few MB whatever the file size, catches truncation and most overwritten regions."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _SAMPLE_BLOCK * _SAMPLE_COUNT:
            digest.update(f.read())
        else:
            step = (size - _SAMPLE_BLOCK) / (_SAMPLE_COUNT - 1)
            for i in range(_SAMPLE_COUNT):
                f.seek(int(i * step))
                digest.update(f.read(_SAMPLE_BLOCK))
    return digest.hexdigest()


def write_manifest(folder: Path, extra: dict[str, Any], progress: bool) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {
            "size": path.stat().st_size,
            "sha256": sha256_file(
                path, progress=progress and path.stat().st_size > 1 << 24, desc=f"hash {rel}"
            ),  # fmt: skip
            "sample_sha256": _sample_sha256(path),
        }
    manifest = {"format": _MANIFEST_FORMAT, **extra, "files": files}
    write_text_atomically(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def verify_model_folder(folder: str | os.PathLike, full: bool = False) -> list[str]:
    """Checks a folder built by :func:`load_pretrained` against its manifest.

    :param folder: the model folder
    :param full: hash every file whole instead of checking the
        sizes and sampled blocks (milliseconds)
    :return: the problems found, empty when the folder is intact

    >>> verify_model_folder("/nonexistent")
    ['/nonexistent is not a folder']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != _MANIFEST_FORMAT or not files:
            return [f"{folder / MANIFEST} has an unknown format"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{folder / MANIFEST} is missing or unreadable ({e})"]
    problems = []
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != info["size"]:
            problems.append(f"{rel} has {path.stat().st_size} bytes, expected {info['size']}")
        elif full and sha256_file(path) != info["sha256"]:
            problems.append(f"{rel} does not match its sha256")
        elif not full and _sample_sha256(path) != info["sample_sha256"]:
            problems.append(f"{rel} does not match its sampled hash")
    return problems


__all__ = ["MANIFEST", "sha256_file", "verify_model_folder", "write_manifest"]
