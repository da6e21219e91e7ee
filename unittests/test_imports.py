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


#: the stages of an export in their order: each imports only the ones before it
_STAGES = ("plan", "make", "check", "record")


def _export_imports(path: str) -> set[str]:
    """The sub-packages of ``diag.export`` that a file imports, at its top or inside a
    function (``from diag.export.make.save import ...`` -> ``make``)."""
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    ]
    return {m.split(".")[2] for m in names if m.startswith("diag.export.") and m.count(".") >= 2}


@pytest.mark.parametrize("stage", _STAGES)
def test_each_export_stage_imports_only_the_stages_before_it(stage):
    later = set(_STAGES[_STAGES.index(stage) + 1 :]) | {"causal_lm"}
    folder = os.path.join(ROOT, "diag", "export", stage)
    wrong = {}
    for where, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(where, name)
                found = _export_imports(path) & later
                if found:
                    wrong[os.path.relpath(path, ROOT)] = sorted(found)
    assert not wrong, f"diag.export.{stage} imports a later stage: {wrong}"
