"""The import graph: the contract sits below export and ort, neither imports the other."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pinned: diag's own import graph, the same on every transformers release (a fresh
# interpreter per case, ~15 s a phase)
pytestmark = pytest.mark.pinned


def _loaded_after(module: str) -> set[str]:
    """The diag modules in sys.modules after ``import module`` in a fresh interpreter."""
    code = (
        f"import sys, {module}; "
        "print(' '.join(sorted(m for m in sys.modules if m == 'diag' or m.startswith('diag.'))))"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    )
    return set(out.stdout.split())


def _packages(modules: set[str]) -> set[str]:
    return {m.split(".")[1] for m in modules if m.count(".") >= 1}


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("diag.ort", {"export", "diagnose", "cli", "models"}),
        ("diag.export", {"ort", "diagnose", "cli", "generation"}),
        ("diag.contract", {"export", "ort", "diagnose", "cli", "models", "generation"}),
    ],
)
def test_what_an_import_loads(module, forbidden):
    loaded = _packages(_loaded_after(module))
    assert "contract" in loaded
    assert not loaded & forbidden, f"import {module} loads diag.{sorted(loaded & forbidden)}"
