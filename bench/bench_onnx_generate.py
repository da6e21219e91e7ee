"""Speed of ``onnx_generate`` vs ``diag.generate`` vs ``model.generate``, and the
memory-bandwidth bound of batch-1 decoding, measured in one run.

SmolLM2-135M-Instruct in float32, greedy, ``--new-tokens`` new tokens per row with eos
ignored (``eos_token_id=[]`` for the three functions: every row yields all of them, and
no logits processor runs; ``min_new_tokens`` would add transformers' processor, ~1 ms a
step on this machine, to every function), at batch 1 and batch 8
(eight different prompts, left-padded). For each function and batch: the prefill time
(prompt to first token), the decode throughput (the tokens after the first, all rows,
per second), the end-to-end throughput (all new tokens / wall time); the ONNX session
is created beforehand and reused, as an application would. Each function is warmed
up, then the three alternate ``--repeat`` times; the table shows the medians.

The bound: a batch-1 decode step reads every weight once (the tied embedding counts
once: the lm_head reads it whole, the lookup one row), so it cannot run faster than
``read bandwidth / bytes of weights``; the bandwidth is measured here and now (a
sum over a buffer much larger than the caches, best of several, with as many threads
as ONNX Runtime uses).

Usage::

    python bench/bench_onnx_generate.py            # 100 new tokens, batch 1 and 8, 3 repeats
    python bench/bench_onnx_generate.py --quick    # 20 new tokens, 1 repeat: a smoke check
    python bench/bench_onnx_generate.py --profile  # + ONNX Runtime time per operator type

The kernel floor: a session holding only the model's matrix products (same weight
shapes, layouts and operators) shows what ONNX Runtime's own kernels need to read the
weights once; ``onnx decode / kernel floor`` is the share of the step spent in them,
``kernel floor / bandwidth bound`` how close the kernels come to the probe.

The machine may be shared: read the ratios (measured in the same run), and the load
printed with them, rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Any

import pandas
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prompts import PROMPTS  # noqa: E402

from diag.diagnose.kernel_time import profile_by_op_type  # noqa: E402
from diag.export import export_causal_lm  # noqa: E402
from diag.generation import (  # noqa: E402
    generate,  # noqa: E402
    onnx_generate,
    open_steps,
)
from diag.models import load_pretrained  # noqa: E402
from diag.ort import make_session  # noqa: E402
from diag.ort.session import machine_is_busy, physical_cores  # noqa: E402


class _Clock:
    """A transformers-style streamer that timestamps the prompt and the first token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        if len(self.times) < 2:
            self.times.append(time.perf_counter())

    def end(self) -> None:
        self.times.append(time.perf_counter())


def _timed(fn) -> tuple[float, float, float, torch.Tensor]:
    """Runs ``fn(streamer)``; returns (prefill, decode, total) seconds and the tokens."""
    clock = _Clock()
    begin = time.perf_counter()
    out = fn(clock)
    end = time.perf_counter()
    first_token = clock.times[1]
    return first_token - begin, end - first_token, end - begin, out


def read_bandwidth(size_bytes: int = 2**30, repeat: int = 7, threads: int | None = None) -> float:
    """Best read bandwidth in bytes/s of a sum over ``size_bytes`` of float32."""
    threads = threads or physical_cores()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer = torch.ones(size_bytes // 4, dtype=torch.float32)
        buffer.sum()
        best = float("inf")
        for _ in range(repeat):
            begin = time.perf_counter()
            buffer.sum()
            best = min(best, time.perf_counter() - begin)
        del buffer
    finally:
        torch.set_num_threads(before)
    return size_bytes / best


def matmul_floor_session(onnx_path: str, threads: int, spinning: bool):
    """A session of the exported model's matrix products alone (same weight shapes,
    layouts and operators, random values, no other node): what ONNX Runtime's kernels
    need to read the weights once. Returns ``(session, feeds(batch))``."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(onnx_path, load_external_data=False)
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    nodes, inits, dims = [], [], set()
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in shapes:
            continue
        shape = shapes[node.input[1]]
        if len(shape) != 2:
            continue
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        k = shape[1] if trans_b else shape[0]
        i = len(nodes)
        inits.append(numpy_helper.from_array(rng.standard_normal(shape, np.float32), f"w{i}"))
        attrs = {"transB": 1} if node.op_type == "Gemm" else {}
        nodes.append(helper.make_node(node.op_type, [f"x{k}", f"w{i}"], [f"y{i}"], **attrs))
        dims.add(k)
    nodes.append(helper.make_node("Concat", [n.output[0] for n in nodes], ["y"], axis=-1))
    inputs = [
        helper.make_tensor_value_info(f"x{k}", onnx.TensorProto.FLOAT, ["batch", k])
        for k in sorted(dims)
    ]
    output = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", None])
    graph = helper.make_graph(nodes, "matmul_floor", inputs, [output], inits)
    floor = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = make_session(floor, intra_op_num_threads=threads, allow_spinning=spinning)

    def feeds(batch: int) -> dict:
        return {f"x{k}": rng.standard_normal((batch, k), np.float32) for k in dims}

    return session, feeds, len(nodes) - 1


def time_step(fn, repeat: int = 20) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights a batch-1 decode step reads: every parameter once, except an
    untied input embedding, of which the lookup reads one row."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight.data_ptr() != emb.data_ptr():
        total -= emb.numel() * emb.element_size() - emb.shape[1] * emb.element_size()
    return total


def bench(
    model,
    tokenizer,
    session,
    batch: int,
    new_tokens: int,
    repeat: int,
    warmup: int,
    names: list[str] | None = None,
    between: Any = None,
) -> list[dict]:
    """Times the functions, alternating them ``repeat`` times; ``between()`` runs after
    each round (the kernel floor and the bandwidth probe: measured in the same minutes
    as the functions, this VM's memory bandwidth drifting by 2x within minutes)."""
    enc = tokenizer(PROMPTS[:batch], return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    kwargs = dict(
        max_new_tokens=new_tokens,
        eos_token_id=[],
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )

    def hf(streamer):
        with torch.inference_mode():
            return model.generate(ids, attention_mask=mask, streamer=streamer, **kwargs)

    def dg(streamer):
        return generate(model, ids, mask, streamer=streamer, **kwargs)

    def ox(streamer):
        return onnx_generate(
            session,
            ids,
            mask,
            streamer=streamer,
            generation_config=model.generation_config,
            **kwargs,
        )

    functions = {"model.generate": hf, "diag.generate": dg, "onnx_generate": ox}
    functions = {k: v for k, v in functions.items() if names is None or k in names}
    for _ in range(warmup):
        for fn in functions.values():
            _timed(fn)
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in functions}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(repeat):
        for name, fn in functions.items():
            prefill, decode, total, out = _timed(fn)
            times[name].append((prefill, decode, total))
            outputs[name] = out
        if between is not None:
            between()
    rows = []
    for name, values in times.items():
        prefill = statistics.median(v[0] for v in values)
        decode = statistics.median(v[1] for v in values)
        total = statistics.median(v[2] for v in values)
        rows.append(
            {
                "function": name,
                "batch": batch,
                "prompt_len": ids.shape[1],
                "prefill_ms": 1e3 * prefill,
                "decode_tok/s": batch * (new_tokens - 1) / decode,
                "e2e_tok/s": batch * new_tokens / total,
                "same_tokens": torch.equal(outputs[name], next(iter(outputs.values()))),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> pandas.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="name or HF folder")
    parser.add_argument("--onnx", default=None, help="an exported model (default: export it)")
    parser.add_argument("--quick", action="store_true", help="20 tokens, 1 repeat, 1 warm-up")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch and ORT threads")
    parser.add_argument("--profile", action="store_true", help="ORT time per operator type")
    parser.add_argument(
        "--functions",
        nargs="+",
        default=["model.generate", "diag.generate", "onnx_generate"],
        choices=["model.generate", "diag.generate", "onnx_generate"],
        help="what to time (the torch ones are slow on a busy machine)",
    )
    parser.add_argument(
        "--spinning",
        choices=["auto", "on", "off"],
        default="auto",
        help="ORT intra-op threads busy-wait (auto: off when the machine is overloaded)",
    )
    args = parser.parse_args(argv)
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    new_tokens, repeat, warmup = args.new_tokens, args.repeat, 1
    if args.quick:
        new_tokens, repeat = 20, 1

    model, tokenizer = load_pretrained(args.model)
    model = model.eval().to(torch.float32)
    onnx_path = args.onnx or export_causal_lm(model).filename
    spinning = {"auto": None, "on": True, "off": False}[args.spinning]
    if spinning is None:
        spinning = not machine_is_busy()
    session = open_steps(
        make_session(onnx_path, intra_op_num_threads=threads, allow_spinning=spinning)
    ).backend

    floor_session, floor_feeds, floor_products = matmul_floor_session(
        os.fspath(onnx_path), threads, spinning
    )
    rows, floors, bandwidths = [], {}, []
    for b in args.batch:
        feeds = floor_feeds(b)
        floor_times: list[float] = []

        def between(feeds=feeds, floor_times=floor_times) -> None:
            floor_times.append(time_step(lambda: floor_session.run(None, feeds), repeat=10))
            bandwidths.append(read_bandwidth(threads=threads, repeat=3))

        rows.extend(
            bench(model, tokenizer, session, b, new_tokens, repeat, warmup, args.functions, between)
        )
        floors[b] = statistics.median(floor_times)
    df = pandas.DataFrame(rows)

    bandwidth = statistics.median(bandwidths)
    per_token = weight_bytes_per_token(model)
    bound = bandwidth / per_token

    def value(function: str, batch: int, column: str) -> float:
        sel = df[(df.function == function) & (df.batch == batch)][column]
        return float(sel.iloc[0]) if len(sel) else float("nan")

    b1 = min(args.batch)
    bmax = max(args.batch)
    ratios = {
        "onnx / model.generate (decode, batch 1)": value("onnx_generate", b1, "decode_tok/s")
        / value("model.generate", b1, "decode_tok/s"),
        "onnx / diag.generate (decode, batch 1)": value("onnx_generate", b1, "decode_tok/s")
        / value("diag.generate", b1, "decode_tok/s"),
        "onnx decode batch 1 / bandwidth bound": value("onnx_generate", b1, "decode_tok/s") / bound,
        "kernel floor batch 1 / bandwidth bound": b1 / floors[b1] / bound,
        "onnx decode batch 1 / kernel floor": value("onnx_generate", b1, "decode_tok/s")
        / (b1 / floors[b1]),
        f"onnx decode batch {bmax} / kernel floor": value("onnx_generate", bmax, "decode_tok/s")
        / (bmax / floors[bmax]),
        f"onnx decode batch {bmax} / batch {b1}": value("onnx_generate", bmax, "decode_tok/s")
        / value("onnx_generate", b1, "decode_tok/s"),
        f"onnx e2e batch {bmax} / batch {b1}": value("onnx_generate", bmax, "e2e_tok/s")
        / value("onnx_generate", b1, "e2e_tok/s"),
    }

    pandas.set_option("display.width", 200)
    print(
        f"torch {torch.__version__}, {threads} threads; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
        f"{new_tokens} new tokens, median of {repeat}; ORT spinning {'on' if spinning else 'off'}"
    )
    print(df.round(2).to_string(index=False))
    print(
        f"\nbandwidth bound, batch 1: {per_token / 2**20:.0f} MiB of weights per token / "
        f"{bandwidth / 2**30:.1f} GiB/s measured = {bound:.1f} tokens/s"
    )
    for b, seconds in floors.items():
        print(
            f"kernel floor, batch {b}: the model's {floor_products} matrix products alone "
            f"take {1e3 * seconds:.2f} ms = {b / seconds:.1f} tokens/s"
        )
    for name, ratio in ratios.items():
        print(f"{name:45s} {ratio:6.2f}")

    if args.profile:
        print("\nONNX Runtime, batch 1, time per operator type:")
        print(
            profile_by_op_type(
                onnx_path,
                tokenizer(PROMPTS[0], return_tensors="pt").input_ids,
                new_tokens=new_tokens,
                threads=threads,
            )
            .round(2)
            .to_string()
        )
    return df


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
