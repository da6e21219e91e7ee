"""Progress bars of the sub-commands (tqdm on stderr, only on a terminal).

Example::

    for step in progress(range(3), desc="warm-up"):
        ...
"""

from __future__ import annotations

from typing import Any


def progress(*args: Any, **kwargs: Any) -> Any:
    """A tqdm progress bar on stderr, shown only when stderr is a terminal (so that logs
    and the tests' captured output stay clean).

    >>> list(progress(range(3), desc="steps"))
    [0, 1, 2]
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", None)  # None = disabled when not a TTY
    kwargs.setdefault("leave", False)
    return tqdm(*args, **kwargs)
