"""The cached folder of a known model: built once, verified against its manifest,
rebuilt when damaged, the old one kept when a build fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from diag.models import pretrained as pt
from diag.models.pretrained import build as pt_build


def _leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.parent.iterdir() if p.name.startswith(".") and "lock" not in p.name
    )


def test_cache_built_once_and_rebuilt_when_truncated(fake_build):
    folder = pt.ensure_model_folder(progress=False)
    assert folder == pt.model_folder("smollm2-135m-instruct")
    assert len(fake_build) == 1
    # built elsewhere, then renamed into place
    assert fake_build[0] != folder and not fake_build[0].exists()
    assert pt.verify_model_folder(folder) == []
    assert pt.verify_model_folder(folder, full=True) == []
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    assert size > 1_000_000

    assert pt.ensure_model_folder(progress=False) == folder
    assert len(fake_build) == 1  # intact: not rebuilt

    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    problems = pt.verify_model_folder(folder)
    assert problems == [f"model.safetensors has {size // 2} bytes, expected {size}"]
    pt.ensure_model_folder(progress=False)
    assert len(fake_build) == 2
    assert weights.stat().st_size == size
    assert pt.verify_model_folder(folder) == []
    assert _leftovers(folder) == []


def test_corruption_detected(fake_build):
    folder = pt.ensure_model_folder(progress=False)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    # same size, first bytes (the safetensors header) overwritten: the quick check sees it
    with open(weights, "r+b") as f:
        f.write(b"\xff" * 1000)
    assert pt.verify_model_folder(folder) == ["model.safetensors does not match its sampled hash"]
    pt.ensure_model_folder(progress=False)
    assert len(fake_build) == 2 and pt.verify_model_folder(folder) == []
    # a few bytes changed between the sampled blocks: only the full hash sees them
    with open(weights, "r+b") as f:
        f.seek(size // 2 + 12345)
        f.write(b"\x01\x02\x03")
    assert pt.verify_model_folder(folder, full=True) == [
        "model.safetensors does not match its sha256"
    ]
    # a missing file or manifest
    (folder / "config.json").unlink()
    assert pt.verify_model_folder(folder) == ["config.json is missing"]
    (folder / pt.MANIFEST).unlink()
    assert "missing or unreadable" in pt.verify_model_folder(folder)[0]
    pt.ensure_model_folder(progress=False)
    assert len(fake_build) == 3 and pt.verify_model_folder(folder, full=True) == []


def test_failed_build_keeps_old_folder(fake_build, monkeypatch):
    folder = pt.ensure_model_folder(progress=False)
    (folder / "config.json").unlink()  # damaged, needs a rebuild

    def broken_convert(gguf_file, out_dir):
        (Path(out_dir) / "half-written").write_text("x")
        raise RuntimeError("conversion crashed")

    monkeypatch.setattr(pt_build, "convert_gguf", broken_convert)
    with pytest.raises(RuntimeError, match="conversion crashed"):
        pt.ensure_model_folder(progress=False)
    assert (folder / "model.safetensors").exists()
    assert not (folder / "half-written").exists()
    assert _leftovers(folder) == []


