"""The tested set (diag.compat.versions): its data files, the range check on real release
numbers, the warning of export_causal_lm on a transformers newer than tested, and the
agreement of the data files with the repository's constraints.txt, README.rst and .ci/run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from importlib import resources

import pytest
from packaging.version import Version

from diag.compat import versions
from diag.compat.versions import (
    INSIDE,
    MISSING,
    NEWER,
    OLDER,
    TESTED,
    UNKNOWN,
    check_installed,
    check_version,
    other_transformers_releases,
    pinned_releases,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ["torch", "transformers", "onnx", "onnxruntime", "onnxscript", "onnx-ir"]
# pinned too, but optional at run time (tools whose output diag reads)
PEERS = ["onnxruntime-genai", "optree"]
# the range of transformers at the time of writing, as input of the range logic
RANGE = ("4.57.6", "5.24.0", "5.25.0")


def repo_file(*parts: str) -> str:
    path = os.path.join(ROOT, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{os.path.join(*parts)} is not here (diag installed, not a checkout)")
    return path


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_pins_are_one_exact_release_per_package():
    pins = pinned_releases()
    assert list(pins) == PACKAGES + PEERS
    assert list(versions.PEERS) == PEERS
    for release in pins.values():
        assert str(Version(release)) == release


def test_tested_transformers_span_the_floor_to_the_pin():
    tested = versions.tested_releases()
    others = other_transformers_releases()
    assert others, "tested_transformers.txt lists no release"
    pinned = pinned_releases()["transformers"]
    assert pinned not in others, "the pinned release is tested by the whole suite already"
    assert tested["transformers"] == tuple(sorted({pinned, *others}, key=Version))
    assert tested["transformers"][-1] == pinned, "the pin is the newest tested release"
    # the other packages are tested on their pin and on the pins of a phase's extras
    instead = {}
    for requirements in versions.extra_requirements().values():
        for package, _, release in (r.partition("==") for r in requirements):
            instead.setdefault(package, set()).add(release)
    for p in PACKAGES:
        if p != "transformers":
            expected = {pinned_releases()[p], *instead.get(p, ())}
            assert tested[p] == tuple(sorted(expected, key=Version)), p


def test_floor_is_the_requirement_of_pyproject():
    text = read(repo_file("pyproject.toml"))
    floor = re.search(r'"transformers>=([^"]+)"', text).group(1)
    assert versions.tested_releases()["transformers"][0] == floor


@pytest.mark.parametrize(
    "installed, status",
    [
        ("4.57.6", TESTED),
        ("5.24.0", TESTED),
        ("5.25.0", TESTED),
        ("5.25.0+local", TESTED),
        ("5.0.0", INSIDE),
        ("5.25.0rc1", INSIDE),
        ("4.57.5", OLDER),
        ("4.56.2", OLDER),
        ("5.25.1", NEWER),
        ("5.26.0.dev0", NEWER),
        ("6.0.0", NEWER),
        (None, MISSING),
        ("not-a-version", UNKNOWN),
    ],
)
def test_range_logic(installed, status):
    found = check_version("transformers", installed, RANGE)
    assert found.status == status
    assert found.inside == (status in (TESTED, INSIDE))
    assert found.tested_range == "4.57.6 to 5.25.0 (4.57.6, 5.24.0, 5.25.0)"


def test_local_label_of_torch_is_its_release():
    pinned = pinned_releases()["torch"]
    found = check_version("torch", f"{pinned}+cpu")
    assert (found.status, found.tested) == (TESTED, versions.tested_releases()["torch"])
    assert pinned in found.tested_range
    newest = versions.tested_releases()["torch"][-1]
    assert check_version("TORCH", f"{newest}.post1").status == NEWER


def test_unknown_package_says_what_is_tested():
    with pytest.raises(KeyError, match="transformers"):
        check_version("numpy", "2.0.0")


def test_check_installed_reads_the_installed_releases():
    checks = check_installed()
    assert [c.package for c in checks] == PACKAGES + PEERS
    for c in checks:
        # a peer may be absent (diag does not need it): None, and "optional" as its status
        assert c.installed == versions.installed_version(c.package)
        assert c.status == check_version(c.package, c.installed).status


@pytest.fixture
def fresh_warning(monkeypatch):
    """The warn-once state of a new process."""
    monkeypatch.setattr(versions, "_transformers_checked", False)


def installed_transformers(monkeypatch, release: str) -> None:
    real = versions.installed_version
    monkeypatch.setattr(
        versions,
        "installed_version",
        lambda package: release if package == "transformers" else real(package),
    )


def newer_than_tested() -> str:
    newest = Version(versions.tested_releases()["transformers"][-1])
    return f"{newest.major}.{newest.minor + 1}.0"


def test_warns_once_on_a_newer_transformers(monkeypatch, fresh_warning):
    newer = newer_than_tested()
    installed_transformers(monkeypatch, newer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the once is diag's, not the warnings registry's
        versions.warn_if_transformers_untested()
        versions.warn_if_transformers_untested()
    assert [w.category for w in caught] == [versions.UntestedReleaseWarning]
    # a filter on UserWarning a user already has still applies to it
    assert issubclass(versions.UntestedReleaseWarning, UserWarning)
    message = str(caught[0].message)
    assert f"transformers {newer} is newer" in message
    assert versions.tested_releases()["transformers"][-1] in message
    assert "python -m diag versions" in message


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_no_warning_inside_the_range(monkeypatch, fresh_warning, which):
    tested = versions.tested_releases()["transformers"]
    installed_transformers(monkeypatch, tested[0] if which == "oldest" else tested[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        versions.warn_if_transformers_untested()
    assert caught == []


def test_export_causal_lm_warns_before_anything_else(monkeypatch, fresh_warning):
    import torch

    from diag.export.causal_lm import export_causal_lm

    installed_transformers(monkeypatch, newer_than_tested())
    # a model export_causal_lm refuses: the warning comes first, then the usual error
    with pytest.warns(versions.UntestedReleaseWarning, match="python -m diag versions"):
        with pytest.raises(TypeError, match="has no `config`"):
            export_causal_lm(torch.nn.Linear(2, 2))


def test_bad_pin_says_which_file(monkeypatch):
    monkeypatch.setattr(versions, "data_lines", lambda name: ["torch>=2.9"])
    with pytest.raises(ValueError, match=r"tested_pins.txt: 'torch>=2.9' is not a pin"):
        pinned_releases()


def test_constraints_include_the_pins_and_pin_nothing_else():
    constraints = repo_file("constraints.txt")
    lines = [line.split("#", 1)[0].strip() for line in read(constraints).splitlines()]
    lines = [line for line in lines if line]
    # the pins are written once, in the package data that diag reads at run time
    assert lines == [f"-c diag/compat/{versions.PINS_FILE}"]
    # pip resolves the nested -c relative to constraints.txt: that file is the one diag reads
    included = os.path.join(os.path.dirname(constraints), "diag", "compat", versions.PINS_FILE)
    shipped = resources.files("diag.compat").joinpath(versions.PINS_FILE)
    assert read(included) == shipped.read_text(encoding="utf-8")


def test_readme_says_the_tested_set():
    text = read(repo_file("README.rst"))
    section = text.split("Supported versions\n------------------\n", 1)[1].split("\n---", 1)[0]
    for package, release in pinned_releases().items():
        assert f"{package} {release}" in section, package
    for release in versions.tested_releases()["transformers"]:
        assert release in section


def test_ci_reads_the_data_files():
    script = read(repo_file(".ci", "run"))
    assert f"diag/compat/{versions.TRANSFORMERS_FILE}" in script
    assert f"diag/compat/{versions.PINS_FILE}" in script


# pinned: packaging (pip builds a wheel), the same on every transformers release
@pytest.mark.pinned
def test_wheel_ships_the_data_files(tmp_path):
    """A non-editable install knows the tested set: the wheel holds both data files."""
    pytest.importorskip("setuptools", minversion="68")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.rst"):
        shutil.copy(repo_file(name), source / name)
    shutil.copytree(
        os.path.join(ROOT, "diag"), source / "diag", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("diag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (versions.PINS_FILE, versions.TRANSFORMERS_FILE):
        assert f"diag/compat/{name}" in names


def test_a_missing_peer_is_optional_not_outside():
    check = check_version("onnxruntime-genai", None)
    assert check.status == versions.OPTIONAL and check.inside
    # a missing package diag needs is outside the range
    assert not check_version("onnx", None).inside


def test_extra_requirements_of_the_release_phases():
    extras = versions.extra_requirements()
    assert list(extras) == other_transformers_releases()
    # optimum-onnx needs transformers < 4.58, onnx-diagnostic 0.9.3 too: only the 4.57
    # phase installs them
    assert extras["4.57.6"] == ["optimum-onnx==0.1.0", "onnx-diagnostic==0.9.3", "scipy==1.17.1"]
    # the newest 5.x before the pin runs on the newest torch
    assert extras[other_transformers_releases()[-1]] == ["torch==2.14.1"]


def test_a_phase_pin_joins_the_tested_range(monkeypatch):
    lines = {
        versions.PINS_FILE: ["torch==2.13.0", "transformers==5.25.0", "onnx==1.23.2"],
        versions.TRANSFORMERS_FILE: ["4.57.6 optimum-onnx==0.1.0", "5.24.0 torch==2.14.1"],
    }
    monkeypatch.setattr(versions, "data_lines", lines.get)
    tested = versions.tested_releases()
    # optimum-onnx is not in the tested set: an extra requirement only
    assert tested == {
        "torch": ("2.13.0", "2.14.1"),
        "transformers": ("4.57.6", "5.24.0", "5.25.0"),
        "onnx": ("1.23.2",),
    }
    assert check_version("torch", "2.14.1+cu130").status == TESTED
    assert check_version("torch", "2.14.0").status == INSIDE
    assert check_version("torch", "2.15.0").status == NEWER
    assert check_version("torch", "2.13.0+cpu").tested_range == "2.13.0 to 2.14.1 (2.13.0, 2.14.1)"
