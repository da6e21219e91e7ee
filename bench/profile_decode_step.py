"""Where one decode step of SmolLM2 goes, diag's exports against onnxruntime-genai's
builds, in one run: per op type the kernel calls and milliseconds per step (ONNX
Runtime's profiler, :func:`diag.ort.profiling.read_kernels`), the kernels' sum, the
``model_run`` time ONNX Runtime reports per step (kernels + its own overhead), and the
wall time of a whole step through :func:`diag.onnx_generate` without the profiler
(``run_with_iobinding`` + Python); for genai's folders, the step of genai's own
``Generator`` too.

The prompt is ``--positions`` tokens long, then ``--steps`` greedy steps (eos
ignored); a step is the mean of them. The contenders run one after the other
``--repeat`` times (alternated) and the medians are printed.

Usage::

    python bench/profile_decode_step.py                       # diag fp32/int4, genai fp32/int4
    python bench/profile_decode_step.py --contenders "diag int4" "genai int4"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import pandas
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_quantized import GenaiRunner  # noqa: E402

import diag  # noqa: E402
from diag.export import export_causal_lm  # noqa: E402
from diag.export.plan.export_key import cache_dir  # noqa: E402
from diag.generation import onnx_generate, open_steps  # noqa: E402
from diag.helpers.torch_helper import single_torch_thread  # noqa: E402
from diag.ort.profiling import read_kernels  # noqa: E402
from diag.ort.session import default_session_options, physical_cores  # noqa: E402

GENAI = {"genai fp32": "smollm2-135m-instruct-fp32-cpu", "genai int4": "smollm2-135m-instruct-int4-cpu"}


def model_runs(trace: str) -> list[float]:
    """The duration (ms) of each ``model_run`` of a profile, in order."""
    with open(trace, encoding="utf-8") as f:
        events = json.load(f)
    runs = sorted((e["ts"], e.get("dur", 0)) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")  # fmt: skip
    return [d / 1e3 for _, d in runs]


def generate(backend, ids: torch.Tensor, steps: int):
    with single_torch_thread():
        return onnx_generate(backend, ids, max_new_tokens=steps + 1, eos_token_id=[],
                             do_sample=False, return_result=True)  # fmt: skip


def profile(path: str, ids: torch.Tensor, steps: int, threads: int) -> tuple[pandas.DataFrame, dict]:
    """Per op type: calls and ms per decode step; the sums and the step's times."""
    # the wall time of a step, without the profiler
    backend = open_steps(path, session_options=default_session_options(intra_op_num_threads=threads)).backend
    generate(backend, ids, 4)
    wall = 1e3 * generate(backend, ids, steps).decode_seconds / steps
    options = default_session_options(intra_op_num_threads=threads, enable_profiling=True)
    backend = open_steps(path, session_options=options).backend
    generate(backend, ids, steps)
    trace = backend.session.end_profiling()
    try:
        kernels = read_kernels(trace)
        runs = model_runs(trace)
    finally:
        os.remove(trace)
    decode = kernels[kernels["run"] >= 1]  # run 0: the prefill
    table = decode.groupby("op_type")["ms"].agg(["count", "sum"]) / steps
    table.columns = ["calls/step", "ms/step"]
    totals = {
        "nodes/step": float(table["calls/step"].sum()),
        "kernels ms": float(table["ms/step"].sum()),
        "model_run ms": statistics.mean(runs[1:]),
        "step wall ms": wall,
        # genai's own loop (C++) on its folder: what bench_quantized.py compares with
        "genai Generator ms": float("nan"),
    }
    if os.path.isdir(path):
        runner = GenaiRunner(path)
        runner.run(ids, torch.ones_like(ids), 4)
        totals["genai Generator ms"] = 1e3 * runner.run(ids, torch.ones_like(ids), steps + 1)[1] / steps
    return table.sort_values("ms/step", ascending=False), totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--positions", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--contenders", nargs="*",
                        default=["diag fp32", "diag int4", "genai fp32", "genai int4"])  # fmt: skip
    args = parser.parse_args(argv)
    threads = physical_cores()
    model, tokenizer = diag.load_pretrained("smollm2-135m-instruct")
    paths = {}
    for name in args.contenders:
        if name.startswith("genai"):
            paths[name] = os.path.join(cache_dir(), "genai", GENAI[name])
        else:
            quantize = None if name.endswith("fp32") else name.split()[-1]
            paths[name] = export_causal_lm(model.eval(), quantize=quantize, verify=False).filename
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 20)
    ids = tokenizer(text, return_tensors="pt").input_ids[:, : args.positions]
    tables: dict[str, list[pandas.DataFrame]] = {n: [] for n in paths}
    totals: dict[str, list[dict]] = {n: [] for n in paths}
    for _ in range(args.repeat):
        for name, path in paths.items():  # alternated
            table, total = profile(path, ids, args.steps, threads)
            tables[name].append(table)
            totals[name].append(total)
    pandas.set_option("display.width", 200)
    summary = {}
    for name in paths:
        merged = pandas.concat(tables[name]).groupby(level=0).median()
        print(f"\n{name}: {args.positions} positions, {threads} threads, median of {args.repeat}")
        print(merged.sort_values("ms/step", ascending=False).to_string(float_format=lambda v: f"{v:.3f}"))
        summary[name] = {k: statistics.median(t[k] for t in totals[name]) for k in totals[name][0]}
        summary[name]["spread wall"] = (
            max(t["step wall ms"] for t in totals[name]) - min(t["step wall ms"] for t in totals[name])
        ) / summary[name]["step wall ms"]
    df = pandas.DataFrame(summary).T
    df["ORT overhead ms"] = df["model_run ms"] - df["kernels ms"]
    df["outside run ms"] = df["step wall ms"] - df["model_run ms"]
    print("\nper decode step (ms; wall: onnx_generate without the profiler)")
    print(df.to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
