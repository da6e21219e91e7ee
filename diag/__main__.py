"""``python -m diag ...``: the command line (see :mod:`diag.cli`)."""

from diag.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
