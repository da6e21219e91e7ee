"""``diag versions`` and ``diag --version``, with the releases really installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

import diag
from diag.cli.main import EXIT_FAILURE, main
from diag.compat import versions
from diag.compat.versions import check_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows(out: str) -> dict[str, list[str]]:
    """``{package: [installed, tested range, status]}`` of the table, split on 2+ spaces."""
    lines = out.splitlines()
    header = re.split(r"\s{2,}", lines[1])
    assert header == ["package", "installed", "tested", "status"]
    found = {}
    for line in lines[2:]:
        cells = re.split(r"\s{2,}", line)
        if len(cells) == 4:
            found[cells[0]] = cells[1:]
    return found


def test_versions_lists_the_installed_releases(capsys):
    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"diag {diag.__version__}"
    table = rows(out)
    assert list(table) == list(versions.tested_releases())
    for package, (installed, tested_range, status) in table.items():
        # a peer may be absent (diag does not need it): the table says "-"
        expected = check_version(package, versions.installed_version(package))
        assert installed == (expected.installed or "-")
        assert tested_range == expected.tested_range
        assert status == expected.status
    transformers = versions.tested_releases()["transformers"]
    assert table["transformers"][1].startswith(f"{transformers[0]} to {transformers[-1]} (")
    outside = [p for p in table if not check_version(p, versions.installed_version(p)).inside]
    assert ("outside the tested range" in out) == bool(outside)


def test_an_untested_release_is_named(capsys, monkeypatch):
    # the releases are fed in: every package at its pin but onnx (older) and torch
    # (newer), whatever this environment has installed
    installed = {package: tested[-1] for package, tested in versions.tested_releases().items()}
    installed.update(onnx="1.0.0", torch="99.0.0+cu130")
    monkeypatch.setattr(versions, "installed_version", installed.get)
    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert table["onnx"] == ["1.0.0", versions.pinned_releases()["onnx"], versions.OLDER]
    torch_range = check_version("torch", "2.13.0").tested_range
    assert table["torch"] == ["99.0.0+cu130", torch_range, versions.NEWER]
    assert table["transformers"][2] == versions.TESTED
    assert out.splitlines()[-1].startswith("outside the tested range: torch, onnx; ")


def test_the_tested_set_is_not_named_outside(capsys, monkeypatch):
    installed = {package: tested[-1] for package, tested in versions.tested_releases().items()}
    monkeypatch.setattr(versions, "installed_version", installed.get)
    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    assert {status for _, _, status in rows(out).values()} == {versions.TESTED}
    assert "outside the tested range" not in out


def test_version_option_prints_the_same_report(capsys):
    assert main(["versions"]) == 0
    expected = capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == expected


def test_broken_data_file_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(versions, "data_lines", lambda name: ["torch>=2.9"])
    assert main(["versions"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("diag: error: diag/compat/tested_pins.txt: 'torch>=2.9'")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("diag: error: ") and err.count("\n") == 1


def test_python_m_diag_version():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "diag", "--version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"diag {diag.__version__}"
    # the column is as wide as the longest name (onnxruntime-genai)
    assert re.search(rf"^transformers +{re.escape(metadata.version('transformers'))} ", done.stdout, re.M)
