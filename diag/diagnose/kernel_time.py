"""Where ONNX Runtime spends a generation's time, per operator type: a generation run
with a profiling session (:func:`diag.onnx_generate`), its trace read by
:mod:`diag.ort.profiling`; the whole generation (:func:`profile_by_op_type`) or the
prefill and one decode step apart (:func:`profile_phases`).

Example::

    df = profile_by_op_type("model.onnx", input_ids, new_tokens=20)
    df.head()   # MatMul first for a small LM on CPU: decoding reads the weights
"""

from __future__ import annotations

import os
from typing import Any

import pandas
import torch

from diag.generation.onnx_generate import onnx_generate
from diag.ort.chunked_prefill import PREFILL_CHUNK, prefill_chunks
from diag.ort.open import open_ort_backend
from diag.ort.profiling import by_op_type, read_kernels
from diag.ort.session import make_session


def _profiled_generation(
    model: Any,
    input_ids: torch.Tensor,
    new_tokens: int,
    threads: int | None,
    providers: Any,
    prefill_chunk: int | None = PREFILL_CHUNK,
    **generate_kwargs: Any,
) -> tuple[pandas.DataFrame, Any, Any]:
    """``(kernels, backend, result)``: one greedy generation of ``new_tokens`` with a
    profiling session, its trace read as one row per kernel call
    (:func:`~diag.ort.profiling.read_kernels`) and removed."""
    session = make_session(model, providers, intra_op_num_threads=threads, enable_profiling=True)
    backend = open_ort_backend(session, prefill_chunk=prefill_chunk)
    result = onnx_generate(
        backend, input_ids, max_new_tokens=new_tokens, return_result=True, **generate_kwargs
    )
    trace = session.end_profiling()
    try:
        kernels = read_kernels(trace)
    finally:
        os.remove(trace)
    return kernels, backend, result


def profile_by_op_type(
    model: Any,
    input_ids: torch.Tensor,
    *,
    new_tokens: int = 20,
    threads: int | None = None,
    providers: Any = None,
) -> pandas.DataFrame:
    """Generates ``new_tokens`` greedily with a profiling session and returns
    :func:`~diag.ort.profiling.read_profile`'s table, with ``ms_per_step`` and ``calls_per_step``.

    ``model`` is anything :func:`diag.ort.make_session` takes. The trace file is
    removed afterwards.
    """
    kernels, _, result = _profiled_generation(model, input_ids, new_tokens, threads, providers)
    df = by_op_type(kernels)
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
    kernels, backend, _ = _profiled_generation(
        model, input_ids, new_tokens, threads, providers, prefill_chunk, eos_token_id=[]
    )
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


__all__ = ["profile_by_op_type", "profile_phases"]
