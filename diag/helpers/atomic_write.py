"""Files written atomically: a reader sees the old file or the new one, never half of one.

The content goes to a temporary file in the destination's folder (same filesystem),
which :func:`os.replace` then renames over the destination; a failure removes the
temporary file and leaves the previous one untouched. The file gets the permissions
of a file created with ``open`` (``0o666`` less the umask), not ``mkstemp``'s private
``0o600``: caches and reports may be shared.

Example::

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = write_text_atomically(os.path.join(d, "a.json"), '{"a": 1}')
    >>> open(p).read(), sorted(os.listdir(d))
    ('{"a": 1}', ['a.json'])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def _file_mode() -> int:
    """The mode ``open`` would give a new file: ``0o666`` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_file_destination(path: str | os.PathLike) -> str:
    """The absolute path of ``path`` as a file to write; raises an IsADirectoryError
    when it is a folder (checked before any long work that would end writing there).

    >>> import tempfile
    >>> check_file_destination(tempfile.gettempdir())
    Traceback (most recent call last):
    ...
    IsADirectoryError: ... is a folder; give the path of a file to write in it (.../model.onnx).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path!r} is a folder; give the path of a file to write in it "
            f"({os.path.join(path, 'model.onnx')})."
        )
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Calls ``write(tmp_path)`` on a temporary file next to ``path``, then renames it
    to ``path`` (folders created as needed). Returns the absolute path.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = write_atomically(os.path.join(d, "a.txt"), lambda t: open(t, "w").write("x"))
    >>> open(p).read()
    'x'
    """
    path = check_file_destination(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f"{ext}.tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> str:
    """Writes ``text`` (UTF-8) to ``path`` with :func:`write_atomically`."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write_atomically(path, write)
