"""Entry point of ``python -m diag`` and of the ``diag`` console script.

Example::

    >>> main(["versions"])  # doctest: +ELLIPSIS
    diag ...
    package ... installed ... tested ... status
    torch ...
    0

Errors the user can fix (a bad option value, a missing model, an export that fails its
check) end in one line on stderr, ``diag: error: <message>``, and a non-zero exit code;
``--debug`` lets the exception through with its traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from diag.cli import compare, export, generate, inspect, versions

#: sub-command name -> module with ``HELP``, ``DESCRIPTION``, ``add_arguments``, ``run``
COMMANDS: dict[str, ModuleType] = {
    "generate": generate,
    "export": export,
    "compare": compare,
    "versions": versions,
    "inspect": inspect,
}

# Exit codes: 1 = the command ran and found a problem (parity fails), 2 = usage error
# (argparse's convention), 3 = the command could not run (missing model, export failure).
EXIT_USAGE = 2
EXIT_FAILURE = 3


class OneLineErrorParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors take one line on stderr.

    argparse prints the whole usage before the error; with many options that buries the
    message, so the usage is replaced by a pointer to ``--help``.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"diag: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, one sub-parser per command."""
    parser = OneLineErrorParser(
        prog="diag",
        description=(
            "Show, measure and check how a causal language model generates text, "
            "in PyTorch and in ONNX Runtime, side by side."
        ),
        epilog="Run 'diag <command> --help' for the options of a command.",
    )
    # the same report as `diag versions`: which releases are installed matters as much
    # as diag's own version when something breaks
    parser.add_argument("--version", action=versions.VersionsAction)
    subparsers = parser.add_subparsers(
        dest="command", metavar="<command>", title="commands", parser_class=OneLineErrorParser
    )
    for name, module in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter
            if getattr(module, "DEFAULTS_IN_HELP", False)
            else argparse.HelpFormatter,
        )
        module.add_arguments(sub)
        sub.add_argument(
            "--debug",
            action="store_true",
            help="show the full traceback of an error instead of a one-line message",
        )
        sub.set_defaults(handler=module.run, parser=sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (``sys.argv[1:]`` by default), runs the command, returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("diag: interrupted\n")
        return 130
    except (ValueError, TypeError, RuntimeError, OSError, ImportError, KeyError) as exc:
        # the library raises these with messages that say what to do
        if args.debug:
            raise
        sys.stderr.write(f"diag: error: {_one_line(exc)} (add --debug for the traceback)\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
