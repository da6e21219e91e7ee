"""``diag versions`` (and ``diag --version``): diag's version, then the installed releases
of the packages whose changes break diag, each against the range tested with diag.

Example::

    python -m diag versions

prints::

    diag 0.1.0
    package       installed   tested                                     status
    torch         2.13.0+cpu  2.13.0                                     tested
    transformers  5.25.0      4.57.6 to 5.25.0 (4.57.6, 5.24.0, 5.25.0)  tested
    ...

The tested set is :mod:`diag.compat.versions`' (the pins of ``constraints.txt`` and the
other transformers releases CI tests). The exit code is 0 whatever is installed: a
release outside the range is not an error, only untested.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "print diag's version and the installed releases against the tested ones"
DESCRIPTION = (
    "Prints diag's version, then the installed releases of torch, transformers, onnx, "
    "onnxruntime, onnxscript and onnx-ir, each marked inside or outside the range of "
    "releases tested with diag (and what that range is)."
)

_HEADER = ("package", "installed", "tested", "status")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``diag versions`` takes no option."""


def versions_report() -> str:
    """The text ``diag versions`` prints (see the module's docstring)."""
    from diag import __version__
    from diag.compat.versions import check_installed

    checks = check_installed()
    rows = [_HEADER] + [(c.package, c.installed or "-", c.tested_range, c.status) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER) - 1)]
    lines = [f"diag {__version__}"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    outside = [c.package for c in checks if not c.inside]
    if outside:
        lines.append(
            f"outside the tested range: {', '.join(outside)}; "
            "'pip install -c constraints.txt -e .' in diag's repository installs the tested set"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Runs ``diag versions``: prints :func:`versions_report`, returns 0."""
    sys.stdout.write(versions_report())
    return 0


class VersionsAction(argparse.Action):
    """``--version``: prints :func:`versions_report` and exits, like argparse's own
    ``version`` action but with the installed releases after diag's version."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any):
        kwargs.setdefault("help", "print diag's version and the installed releases, then exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: Any,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            report = versions_report()
        except (ValueError, OSError) as exc:  # a broken data file of diag.compat
            parser.exit(3, f"diag: error: {' '.join(str(exc).split())}\n")
        sys.stdout.write(report)
        parser.exit()
