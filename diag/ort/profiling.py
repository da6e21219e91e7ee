"""Where ONNX Runtime spends a generation: time per operator type, from its profiler.

Example::

    df = profile_by_op_type("model.onnx", input_ids, new_tokens=20)
    df.head()   # MatMul first for a small LM on CPU: decoding reads the weights
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import pandas
import torch

from diag.ort.backend import OrtBackend
from diag.ort.generate import onnx_generate
from diag.ort.session import make_session


def read_profile(filename: str | os.PathLike) -> pandas.DataFrame:
    """Kernel time per operator type from an ONNX Runtime profile (JSON trace).

    Columns: ``op_type``, ``calls``, ``total_ms``, ``share_%``; sorted by time.
    """
    with open(filename, encoding="utf-8") as f:
        events = json.load(f)
    total: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        total[op] += event.get("dur", 0)
        calls[op] += 1
    all_us = sum(total.values()) or 1
    rows = [
        {"op_type": op, "calls": calls[op], "total_ms": us / 1e3, "share_%": 100 * us / all_us}
        for op, us in total.most_common()
    ]
    return pandas.DataFrame(rows, columns=["op_type", "calls", "total_ms", "share_%"])


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
        OrtBackend(session), input_ids, max_new_tokens=new_tokens, return_result=True
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
