"""The tested set of releases, what is installed, and whether it lies inside the tested range.

The tested set is written once, in two data files beside this module (package data, so
an installed diag knows it as well as a checkout):

* ``tested_pins.txt``: the exact releases of the packages whose changes break diag
  (torch, transformers, onnx, onnxruntime, onnxscript, onnx-ir) and of the peer tools
  the tests need (:data:`PEERS`: onnxruntime-genai, optree), in pip's constraints syntax; ``constraints.txt`` at the repository root includes it with a ``-c`` line;
* ``tested_transformers.txt``: the other transformers releases CI tests, one a line,
  each with the extra requirements of its phase (``.ci/run`` reads it too); an extra
  pin of a package of the tested set (``torch==2.14.1``) replaces its pin in that phase.

A package's tested range runs from its oldest to its newest tested release: for
transformers the floor 4.57.6 up to the pinned release, for the others the pin and
the releases a phase installs instead.
``python -m diag versions`` prints :func:`check_installed`; :func:`warn_if_transformers_untested`
is the one warning :func:`diag.export_causal_lm` gives on a transformers newer than
any tested.

Example::

    >>> sorted(tested_releases())
    ['onnx', 'onnx-ir', 'onnxruntime', 'onnxruntime-genai', 'onnxscript', 'optree', 'torch', 'transformers']
    >>> check_version("transformers", "99.0.0").status == NEWER
    True
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from importlib import metadata, resources

from packaging.version import InvalidVersion, Version

#: the data file of the pins (pip constraints syntax), package data of diag.compat
PINS_FILE = "tested_pins.txt"
#: the data file of the other tested transformers releases, one a line
TRANSFORMERS_FILE = "tested_transformers.txt"

# the statuses of an installed release against its tested range
TESTED = "tested"
INSIDE = "inside the tested range"
OLDER = "older than tested"
NEWER = "newer than tested"
MISSING = "not installed"
UNKNOWN = "unreadable version"

#: pinned packages diag does not need at run time: tools whose output it reads, needed
#: by the tests (pyproject's dev extra); absent, they are "not installed (optional)"
PEERS = ("onnxruntime-genai", "optree")
OPTIONAL = "not installed (optional)"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def data_lines(name: str) -> list[str]:
    """The lines of the data file ``name`` of :mod:`diag.compat`, without comments
    (``#`` to the end of the line) and blank lines."""
    text = resources.files("diag.compat").joinpath(name).read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def pinned_releases() -> dict[str, str]:
    """``{package: release}`` of the tested set (:data:`PINS_FILE`), in the file's order."""
    pins: dict[str, str] = {}
    for line in data_lines(PINS_FILE):
        match = _PIN.match(line)
        if match is None:
            raise ValueError(
                f"diag/compat/{PINS_FILE}: {line!r} is not a pin 'package==release'; "
                "the file holds one exact pin a line (it is diag's tested set)."
            )
        _parse(match.group(2), PINS_FILE)
        pins[_normalize(match.group(1))] = match.group(2)
    return pins


def other_transformers_releases() -> list[str]:
    """The transformers releases CI tests besides the pinned one (:data:`TRANSFORMERS_FILE`,
    the first word of each line)."""
    releases = [line.split()[0] for line in data_lines(TRANSFORMERS_FILE)]
    for release in releases:
        _parse(release, TRANSFORMERS_FILE)
    return releases


def extra_requirements() -> dict[str, list[str]]:
    """``{release: requirements}``: what the CI phase of each other transformers release
    installs besides the tested set (the words after the release in
    :data:`TRANSFORMERS_FILE`; ``4.57.6 optimum-onnx==0.1.0``).

    >>> extra_requirements()["4.57.6"][0]
    'optimum-onnx==0.1.0'
    """
    return {line.split()[0]: line.split()[1:] for line in data_lines(TRANSFORMERS_FILE)}


def tested_releases() -> dict[str, tuple[str, ...]]:
    """``{package: tested releases, oldest first}``: the pins, for transformers the
    other releases CI tests as well, and for a pinned package the other release a
    phase installs among its extra requirements (``5.24.0 torch==2.14.1``)."""
    tested = {name: {release} for name, release in pinned_releases().items()}
    tested["transformers"] = tested.get("transformers", set()) | set(other_transformers_releases())
    for requirements in extra_requirements().values():
        for requirement in requirements:
            match = _PIN.match(requirement)
            if match is not None and _normalize(match.group(1)) in tested:
                _parse(match.group(2), TRANSFORMERS_FILE)
                tested[_normalize(match.group(1))].add(match.group(2))
    return {name: tuple(sorted(releases, key=Version)) for name, releases in tested.items()}


def installed_version(package: str) -> str | None:
    """The installed release of ``package`` (its distribution's metadata), None if absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class VersionCheck:
    """An installed release against the releases tested with diag.

    :param package: the distribution name (``onnx-ir``)
    :param installed: its installed release, None when it is not installed
    :param tested: the tested releases, oldest first
    :param status: :data:`TESTED`, :data:`INSIDE`, :data:`OLDER`, :data:`NEWER`,
        :data:`MISSING` or :data:`UNKNOWN`
    """

    package: str
    installed: str | None
    tested: tuple[str, ...]
    status: str

    @property
    def inside(self) -> bool:
        """True when the installed release lies inside the tested range (an optional
        peer that is not installed is not outside it)."""
        return self.status in (TESTED, INSIDE, OPTIONAL)

    @property
    def tested_range(self) -> str:
        """The range in words: ``2.13.0``, or ``4.57.6 to 5.25.0 (4.57.6, 5.24.0, 5.25.0)``."""
        if len(self.tested) == 1:
            return self.tested[0]
        return f"{self.tested[0]} to {self.tested[-1]} ({', '.join(self.tested)})"


def check_version(
    package: str, installed: str | None, tested: tuple[str, ...] | None = None
) -> VersionCheck:
    """Places the release ``installed`` of ``package`` against its tested releases
    (``tested``, by default :func:`tested_releases`).

    A local label is not part of the release: torch's ``2.13.0+cpu`` is the tested
    ``2.13.0``. A pre-release sorts as PEP 440 says (``5.26.0.dev0`` is newer than
    ``5.25.0``).

    >>> check_version("torch", "2.13.0+cpu", ("2.13.0",)).status == TESTED
    True
    """
    package = _normalize(package)
    if tested is None:
        all_tested = tested_releases()
        if package not in all_tested:
            raise KeyError(f"{package!r} is not in diag's tested set ({', '.join(all_tested)})")
        tested = all_tested[package]
    if installed is None:
        return VersionCheck(package, None, tested, OPTIONAL if package in PEERS else MISSING)
    try:
        release = Version(Version(installed).public)
    except InvalidVersion:
        return VersionCheck(package, installed, tested, UNKNOWN)
    versions = [Version(t) for t in tested]
    if release in versions:
        status = TESTED
    elif release < min(versions):
        status = OLDER
    elif release > max(versions):
        status = NEWER
    else:
        status = INSIDE
    return VersionCheck(package, installed, tested, status)


def check_installed() -> list[VersionCheck]:
    """:func:`check_version` of every package of the tested set, as installed."""
    return [
        check_version(package, installed_version(package), tested)
        for package, tested in tested_releases().items()
    ]


class UntestedReleaseWarning(UserWarning):
    """A package is installed at a release outside the range diag was tested with.

    Its own class so that a caller can let it through while other warnings are errors
    (the gallery's hook prints it once) or silence it:
    ``warnings.filterwarnings("ignore", category=UntestedReleaseWarning)``.
    """


# set once the check below has run: the warning comes once per process
_transformers_checked = False


def warn_if_transformers_untested() -> None:
    """Warns (:class:`UntestedReleaseWarning`, once per process) when the installed transformers is
    newer than the newest release diag was tested with: a new release may move what an
    export relies on (5.24 renamed the forward's cache argument)."""
    global _transformers_checked
    if _transformers_checked:
        return
    _transformers_checked = True
    found = check_version("transformers", installed_version("transformers"))
    if found.status == NEWER:
        warnings.warn(
            f"transformers {found.installed} is newer than the newest release diag was "
            f"tested with ({found.tested[-1]}); if the export fails or differs, "
            "'python -m diag versions' shows the tested range, and "
            "'pip install -c constraints.txt -e .' (diag's repository) the tested set.",
            UntestedReleaseWarning,
            stacklevel=3,
        )


def _normalize(package: str) -> str:
    # PEP 503: onnx_ir, ONNX-IR and onnx-ir are one distribution
    return re.sub(r"[-_.]+", "-", package).lower()


def _parse(release: str, where: str) -> Version:
    try:
        return Version(release)
    except InvalidVersion:
        raise ValueError(
            f"diag/compat/{where}: {release!r} is not a release number (e.g. 4.57.6); "
            "fix that line of the file."
        ) from None


__all__ = [
    "INSIDE",
    "MISSING",
    "NEWER",
    "OLDER",
    "OPTIONAL",
    "PEERS",
    "PINS_FILE",
    "TESTED",
    "TRANSFORMERS_FILE",
    "UNKNOWN",
    "UntestedReleaseWarning",
    "VersionCheck",
    "check_installed",
    "check_version",
    "data_lines",
    "extra_requirements",
    "installed_version",
    "other_transformers_releases",
    "pinned_releases",
    "tested_releases",
    "warn_if_transformers_untested",
]
