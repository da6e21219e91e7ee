"""Fixtures of the cache tests: an empty cache, and a build that saves a tiny gpt2
instead of fetching and converting SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest

from diag.models.pretrained import build as pt_build
from diag.models.untrained import get_tiny_config, make_untrained_model


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DIAG_CACHE", str(root))
    return root


@pytest.fixture
def fake_build(empty_cache, monkeypatch):
    """Replaces the fetch and the 30 s conversion by saving a tiny gpt2: the cache
    logic (manifest, verification, atomic rebuild) runs for real."""
    calls = []

    def fake_ensure_gguf(source, progress=True):
        return empty_cache / "fake.gguf", "0" * 64

    def fake_convert(gguf_file, out_dir):
        calls.append(Path(out_dir))
        make_untrained_model(get_tiny_config("gpt2")).save_pretrained(out_dir)

    monkeypatch.setattr(pt_build, "ensure_gguf", fake_ensure_gguf)
    monkeypatch.setattr(pt_build, "convert_gguf", fake_convert)
    return calls


