"""Runs every gallery script in its fast mode so the gallery cannot rot.

Each ``examples_gallery/<section>/plot_*.py`` runs in a fresh subprocess with ``DIAG_FAST=1``
(a tiny untrained model instead of SmolLM2) through ``_doc/gallery_hooks.py``, which
turns warnings into errors exactly as the documentation build does. The test checks
the script exits with 0 and saved at least one figure, a PNG matplotlib can read.

CI's pinned phase runs every page; its other transformers releases run the pages of
:data:`RELEASE_PAGES` only (the others are marked ``pinned``): each page is a few
calls of the public API, which the unit tests check on every release, and a page costs
a subprocess of 10 to 75 s here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "examples_gallery"
HOOKS = ROOT / "_doc" / "gallery_hooks.py"
SCRIPTS = sorted(GALLERY.glob("*/plot_*.py"))
# seconds: a safety net against a hung script, not a speed check; a fast-mode page takes
# seconds to about a minute on 2 quiet cores (plot_quantized the longest: it quantizes
# twice), several times that while other jobs share the cores
TIMEOUT = 600
# the page every CI phase runs: the generation loops side by side (model.generate,
# diag.generate, onnx_generate), which follow transformers' internals most closely;
# plot_export_patches is pinned like the other pages (each patch is checked on every
# release by unittests/export/make/patches/test_patches.py, the docs build on the pinned set)
RELEASE_PAGES = {"plot_generate"}
# scripts that build their models with another tool: the fixture of the tests that
# build with it, which skips where that tool cannot run (onnxruntime-genai 0.18's
# builder on transformers 4.57), and once per session
PEER_FIXTURES = {"plot_other_exporters": "genai_tiny_llama"}


def _page(script: Path):
    marks = [] if script.stem in RELEASE_PAGES else [pytest.mark.pinned]
    return pytest.param(script, id=script.stem, marks=marks)


def test_gallery_is_not_empty():
    names = {p.name for p in SCRIPTS}
    assert {"plot_generate.py", "plot_sampling.py", "plot_batch.py"} <= names, names
    # a renamed page must not leave the release phases without a page
    assert {f"{page}.py" for page in RELEASE_PAGES} <= names, names


def test_every_page_is_in_a_section():
    # a page at the top or in a folder the index does not list would not be built
    # (sphinx-gallery's subsection_order refuses an unlisted folder)
    assert list(GALLERY.glob("*.py")) == []
    folders = sorted(p.name for p in GALLERY.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(_hooks().SECTIONS)
    for folder in folders:
        readme = (GALLERY / folder / "README.txt").read_text(encoding="utf-8")
        # the section's index names every page of the folder, by its label
        for script in (GALLERY / folder).glob("plot_*.py"):
            label = script.stem.replace("_", "-")
            assert f":ref:`l-{label}`" in readme, (folder, script.name)
            assert f".. _l-{label}:" in script.read_text(encoding="utf-8"), script.name


@pytest.mark.parametrize("script", [_page(p) for p in SCRIPTS])
def test_gallery_script_fast_mode(script: Path, tmp_path: Path, request):
    import matplotlib.image

    if script.stem in PEER_FIXTURES:
        # skips (its reason says why) where the tool cannot run; its build is cached
        request.getfixturevalue(PEER_FIXTURES[script.stem])

    env = dict(os.environ)
    env.update(
        DIAG_FAST="1",
        DIAG_GALLERY_OUT=str(tmp_path),
        MPLBACKEND="Agg",
        # the repository first on the path, whether or not diag is installed
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    proc = subprocess.run(
        [sys.executable, str(HOOKS), str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{script.name} failed with DIAG_FAST=1 (exit code {proc.returncode}).\n"
        f"--- stdout (end) ---\n{proc.stdout[-3000:]}\n--- stderr (end) ---\n{proc.stderr[-6000:]}"
    )
    figures = sorted(tmp_path.glob("*.png"))
    assert figures, f"{script.name} saved no figure in DIAG_GALLERY_OUT ({tmp_path})"
    for fig in figures:
        pixels = matplotlib.image.imread(fig)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, (
            fig.name,
            pixels.shape,
        )


def test_a_warning_in_a_script_fails_it(tmp_path: Path):
    # The mechanism the docs build relies on: a script that warns must fail.
    script = tmp_path / "plot_warns.py"
    script.write_text("import warnings\nwarnings.warn('deprecated thing', FutureWarning)\n")
    proc = subprocess.run(
        [sys.executable, str(HOOKS), str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "FutureWarning: deprecated thing" in proc.stderr, proc.stderr[-2000:]


# a script whose transformers is newer than any tested: diag warns once per process, and
# the second call stands for a second page of the same docs build
UNTESTED_RELEASE_SCRIPT = """
from diag.compat import versions

real = versions.installed_version
versions.installed_version = lambda p: "99.0.0" if p == "transformers" else real(p)
versions.warn_if_transformers_untested()
versions._transformers_checked = False
versions.warn_if_transformers_untested()
print("the page ran to its end")
"""


def test_an_untested_release_is_one_line_of_the_page(tmp_path: Path):
    # a new transformers release must not break the pages: the reader gets one line
    script = tmp_path / "plot_untested.py"
    script.write_text(UNTESTED_RELEASE_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HOOKS), str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "UntestedReleaseWarning" in line]
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("UntestedReleaseWarning: transformers 99.0.0 is newer than")
    assert proc.stdout.rstrip().endswith("the page ran to its end"), proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gallery_hooks", HOOKS)
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def test_warnings_as_errors_hook_restores_filters(capsys):
    import warnings

    from diag.compat.versions import UntestedReleaseWarning

    hooks = _hooks()
    before, show = list(warnings.filters), warnings.showwarning
    hooks.warnings_as_errors({}, "plot_x.py", when="before")
    try:
        with pytest.raises(UserWarning, match="inside a script"):
            warnings.warn("inside a script", UserWarning, stacklevel=1)
        warnings.warn("transformers 9.0 is untested", UntestedReleaseWarning, stacklevel=1)
    finally:
        hooks.warnings_as_errors({}, "plot_x.py", when="after")
    assert capsys.readouterr().out == ("UntestedReleaseWarning: transformers 9.0 is untested\n")
    assert warnings.filters == before
    assert warnings.showwarning is show
