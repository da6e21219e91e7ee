"""Building a cache entry safely: under a file lock between processes, in a folder next
to the target renamed into place, so that a crash or a concurrent process never leaves
a half-written folder in use.

>>> import tempfile
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "entry"
>>> with lock(target), building_folder(target) as tmp:
...     _ = (tmp / "file.txt").write_text("done")
>>> sorted(p.name for p in target.iterdir())
['file.txt']
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


@contextmanager
def building_folder(target: Path) -> Iterator[Path]:
    """Yields an empty folder next to ``target``; on success it replaces ``target``
    (renames, so readers see either the old or the new folder), on failure it is
    removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def lock(target: Path) -> Iterator[None]:
    """Serialises builds of one cache entry between processes (tests run in parallel)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock"), timeout=1800):
        # leftovers of a process killed while building
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in target.parent.glob(f".{target.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


__all__ = ["building_folder", "lock"]
