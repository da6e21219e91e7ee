"""The examples in the docstrings of ``diag`` run, and print what they show.

One test per module of ``diag/`` that holds a ``>>>`` example, so that the README's
test command (``python -m pytest unittests``) and the CI's per-release phases
(``pytest unittests -m "not slow"``) both run them; ``python -m pytest
--doctest-modules diag/<dir>`` runs the same examples one folder at a time.
"""

from __future__ import annotations

import doctest
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "diag")


def _modules_with_examples() -> list[str]:
    """Dotted names of the modules of diag whose source has a ``>>>`` example."""
    names = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        for file in sorted(files):
            if not file.endswith(".py") or file == "__main__.py":
                continue
            path = os.path.join(folder, file)
            with open(path, encoding="utf-8") as f:
                if ">>>" not in f.read():
                    continue
            rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            names.append(".".join(rel))
    return names


MODULES = _modules_with_examples()


def test_modules_are_found():
    # the walk itself: a wrong root would make every other test vanish silently
    assert "diag.helpers.dtypes" in MODULES
    assert "diag.export.make.patches.patch" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    # pytest's --doctest-modules default (ELLIPSIS), so that both runs agree
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS, verbose=False)
    report: list[str] = []
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    # every module kept here has an example doctest finds (not one hidden in a string)
    assert tests, f"{name} has '>>>' in its source but no docstring example doctest finds"
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples fail:\n" + "".join(
        report
    )
