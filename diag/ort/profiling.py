"""ONNX Runtime's profile (its JSON trace) read as tables: one row per kernel call
(:func:`read_kernels`), the time per operator type (:func:`read_profile`);
:mod:`diag.diagnose.kernel_time` profiles a generation with them.

Example::

    session = make_session("model.onnx", enable_profiling=True)
    ...                                  # run it
    read_profile(session.end_profiling()).head()
"""

from __future__ import annotations

import bisect
import json
import os

import pandas


def read_kernels(filename: str | os.PathLike) -> pandas.DataFrame:
    """One row per kernel call of an ONNX Runtime profile (JSON trace): ``run`` (0 for
    the session's first ``run``, 1 for the next...), ``node``, ``op_type``, ``ms``.

    A kernel belongs to the ``model_run`` event whose time span holds its start.
    """
    with open(filename, encoding="utf-8") as f:
        events = json.load(f)
    runs = sorted(
        (e["ts"], e["ts"] + e.get("dur", 0))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    starts = [begin for begin, _ in runs]
    rows = []
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        run = bisect.bisect_right(starts, event.get("ts", 0)) - 1
        rows.append(
            {
                "run": max(run, 0),
                "node": event["name"][: -len("_kernel_time")],
                "op_type": event.get("args", {}).get("op_name", "?"),
                "ms": event.get("dur", 0) / 1e3,
            }
        )
    return pandas.DataFrame(rows, columns=["run", "node", "op_type", "ms"])


def by_op_type(kernels: pandas.DataFrame) -> pandas.DataFrame:
    """Kernel time per operator type of :func:`read_kernels`' rows.

    Columns: ``op_type``, ``calls``, ``total_ms``, ``share_%``; sorted by time.
    """
    grouped = kernels.groupby("op_type")["ms"].agg(["count", "sum"])
    grouped = grouped.sort_values("sum", ascending=False)
    all_ms = float(grouped["sum"].sum()) or 1.0
    return pandas.DataFrame(
        {
            "op_type": grouped.index,
            "calls": grouped["count"].to_numpy(),
            "total_ms": grouped["sum"].to_numpy(),
            "share_%": 100 * grouped["sum"].to_numpy() / all_ms,
        }
    ).reset_index(drop=True)


def read_profile(filename: str | os.PathLike) -> pandas.DataFrame:
    """Kernel time per operator type from an ONNX Runtime profile (JSON trace).

    Columns: ``op_type``, ``calls``, ``total_ms``, ``share_%``; sorted by time.
    """
    return by_op_type(read_kernels(filename))


__all__ = ["by_op_type", "read_kernels", "read_profile"]
