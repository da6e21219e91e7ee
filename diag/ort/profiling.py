"""Where ONNX Runtime spends a generation: time per operator type, from its profiler.

Example::

    df = profile_by_op_type("model.onnx", input_ids, new_tokens=20)
    df.head()   # MatMul first for a small LM on CPU: decoding reads the weights
"""

from __future__ import annotations

import bisect
import json
import os
from typing import Any

import pandas
import torch

from diag.generation.onnx_generate import onnx_generate
from diag.ort.chunked_prefill import PREFILL_CHUNK, prefill_chunks
from diag.ort.open import open_ort_backend
from diag.ort.session import make_session


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


def profile_by_op_type(
    model: Any,
    input_ids: torch.Tensor,
    *,
    new_tokens: int = 20,
    threads: int | None = None,
    providers: Any = None,
) -> pandas.DataFrame:
    """Generates ``new_tokens`` greedily with a profiling session and returns
    :func:`read_profile`'s table, with ``ms_per_step`` and ``calls_per_step``.

    ``model`` is anything :func:`diag.ort.make_session` takes. The trace file is
    removed afterwards.
    """
    session = make_session(model, providers, intra_op_num_threads=threads, enable_profiling=True)
    result = onnx_generate(
        open_ort_backend(session), input_ids, max_new_tokens=new_tokens, return_result=True
    )
    trace = session.end_profiling()
    try:
        df = read_profile(trace)
    finally:
        os.remove(trace)
    steps = max(result.num_steps, 1)
    df["ms_per_step"] = df["total_ms"] / steps
    df["calls_per_step"] = df["calls"] / steps
    return df.set_index("op_type")


def profile_phases(
    model: Any,
    input_ids: torch.Tensor,
    *,
    new_tokens: int = 10,
    threads: int | None = None,
    providers: Any = None,
    prefill_chunk: int | None = PREFILL_CHUNK,
) -> pandas.DataFrame:
    """Kernel time per operator type of the prefill and of one decode step, apart.

    Generates ``new_tokens`` greedily (eos ignored) from ``input_ids`` with a profiling
    session; the prefill is the first run (the first runs when it is chunked:
    ``prefill_chunk``, see :mod:`diag.ort.chunked_prefill`), a decode step the mean of
    the others (a long prompt makes the prefill and every step after it read a long
    cache). Columns: ``prefill_ms``, ``prefill_%``, ``decode_ms``, ``decode_%``,
    indexed by op type, sorted by decode time.
    """
    session = make_session(model, providers, intra_op_num_threads=threads, enable_profiling=True)
    backend = open_ort_backend(session, prefill_chunk=prefill_chunk)
    onnx_generate(backend, input_ids, max_new_tokens=new_tokens, eos_token_id=[])
    trace = session.end_profiling()
    try:
        kernels = read_kernels(trace)
    finally:
        os.remove(trace)
    first = len(prefill_chunks(int(input_ids.shape[1]), backend.prefill_chunk))
    steps = max(int(kernels["run"].max()) + 1 - first, 1)
    prefill = kernels[kernels["run"] < first].groupby("op_type")["ms"].sum()
    decode = kernels[kernels["run"] >= first].groupby("op_type")["ms"].sum() / steps
    df = pandas.DataFrame({"prefill_ms": prefill, "decode_ms": decode}).fillna(0.0)
    df["prefill_%"] = 100 * df["prefill_ms"] / (df["prefill_ms"].sum() or 1.0)
    df["decode_%"] = 100 * df["decode_ms"] / (df["decode_ms"].sum() or 1.0)
    df.index.name = "op_type"
    return df[["prefill_ms", "prefill_%", "decode_ms", "decode_%"]].sort_values(
        "decode_ms", ascending=False
    )
