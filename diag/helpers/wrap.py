"""Reports that fit a terminal, a pytest failure and a documentation page: every line of
a multi-line text longer than :data:`~diag.helpers.wrap.WIDTH` is wrapped at its spaces, the continuation
lines indented four more than the line they continue.

>>> print(wrap_report("  verdict: " + "word " * 20, width=40))
  verdict: word word word word word word
      word word word word word word word
      word word word word word word word
"""

from __future__ import annotations

import textwrap

#: the width of the reports: a pytest failure (which prefixes each line with an ``E`` and spaces)
#: and a page of the docs show it unclipped
WIDTH = 80


def wrap_report(text: str, width: int = WIDTH) -> str:
    """``text`` with each line over ``width`` characters wrapped (see the module)."""
    out = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(
            textwrap.fill(
                line.strip(),
                width=width,
                initial_indent=indent,
                subsequent_indent=indent + "    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)


__all__ = ["WIDTH", "wrap_report"]
