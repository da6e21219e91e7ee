"""The export cache's budget: least recently used entries go first, nothing half removed."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from diag import export_causal_lm, get_untrained_model_with_inputs
from diag.export.record.cache_eviction import (
    BUDGET_VARIABLE,
    budget_bytes,
    entries,
    evict,
    keep_within_budget,
    mark_used,
)


def _entry(root, name: str, size: int, age: float, sidecar: bool = True) -> str:
    folder = os.path.join(root, name)
    os.makedirs(folder)
    model = os.path.join(folder, "model.onnx")
    with open(model, "wb") as f:
        f.write(b"x" * size)
    when = time.time() - age
    os.utime(model, (when, when))
    if sidecar:
        with open(model + ".json", "w") as f:
            f.write("{}")
        os.utime(model + ".json", (when, when))
    return folder


def test_least_recently_used_go_first(tmp_path):
    old = _entry(tmp_path, "old", 400, age=300)
    middle = _entry(tmp_path, "middle", 400, age=200)
    new = _entry(tmp_path, "new", 400, age=100)
    assert [e.folder for e in entries(str(tmp_path))] == [old, middle, new]
    assert [e.size for e in entries(str(tmp_path))] == [402, 402, 402]
    # a reuse makes "old" the most recent one
    mark_used(os.path.join(old, "model.onnx"))
    assert evict(str(tmp_path), budget=900) == [middle]
    assert sorted(os.listdir(tmp_path)) == ["new", "old"]


def test_the_entry_kept_and_exports_under_way_stay(tmp_path):
    kept = _entry(tmp_path, "kept", 1000, age=500)
    running = _entry(tmp_path, "running", 1000, age=60, sidecar=False)
    crashed = _entry(tmp_path, "crashed", 1000, age=7200, sidecar=False)
    done = _entry(tmp_path, "done", 1000, age=100)
    removed = evict(str(tmp_path), keep=kept, budget=10)
    # over budget still: the kept entry and the export under way are never removed
    assert sorted(removed) == sorted([crashed, done])
    assert sorted(os.listdir(tmp_path)) == ["kept", "running"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".removing-")]
    assert os.path.exists(running)


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv(BUDGET_VARIABLE, "1.5")
    assert budget_bytes() == 1.5e9
    monkeypatch.setenv(BUDGET_VARIABLE, "inf")
    assert budget_bytes() == float("inf")
    for bad in ("ten", "0", "-3"):
        monkeypatch.setenv(BUDGET_VARIABLE, bad)
        with pytest.raises(ValueError, match="positive number of gigabytes"):
            budget_bytes()


def test_files_outside_the_cache_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("DIAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(BUDGET_VARIABLE, "1e-9")
    mine = _entry(tmp_path / "mine", "a", 100, age=1000)
    _entry(tmp_path / "mine", "b", 100, age=10)
    assert keep_within_budget(os.path.join(mine, "model.onnx")) == []
    assert sorted(os.listdir(tmp_path / "mine")) == ["a", "b"]


def test_an_export_evicts_older_cached_exports(tmp_path, monkeypatch):
    model = get_untrained_model_with_inputs("llama")["model"]
    monkeypatch.setenv("DIAG_CACHE", str(tmp_path))
    monkeypatch.setenv(BUDGET_VARIABLE, "inf")
    # a first export, made stale by an older last use
    first = export_causal_lm(model, verify=False, opset=22)
    folder = os.path.dirname(first.filename)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    os.utime(first.filename + ".json", (1, 1))
    # room for one export: the next one (another opset, another key) evicts the first
    monkeypatch.setenv(BUDGET_VARIABLE, str(1.5 * size / 1e9))
    found = export_causal_lm(model, verify=False)
    assert not found.cached and found.key != first.key
    assert not os.path.exists(folder)
    assert os.listdir(tmp_path / "onnx") == [os.path.basename(os.path.dirname(found.filename))]
    # reused: its sidecar's time moves, so it counts as the most recent use
    before = os.stat(found.filename + ".json").st_mtime
    time.sleep(0.01)
    again = export_causal_lm(model, verify=False)
    assert again.cached and os.stat(found.filename + ".json").st_mtime > before
    shutil.rmtree(tmp_path / "onnx")
