"""Long prompts: the prefill time and the decode cost per token as the context grows,
for ``model.generate``, ``onnx_generate`` (diag's dynamic export, and the static-cache
export where ``export_causal_lm`` has ``cache="static"``; ``onnx_generate gqa`` and
``onnx_generate gqa static``: the same with ``attention="gqa"``, ONNX Runtime's
GroupQueryAttention) and onnxruntime-genai's fp32 build, in one run.

SmolLM2-135M-Instruct in float32, greedy, ``--new-tokens`` new tokens per row with eos
ignored, prompts of exactly ``--lengths`` tokens (the benchmark prompts of
``prompts.py`` repeated; row ``r`` of a batch starts ``r`` prompts further, so the
rows differ but have the same length: no padding), batch 1 and 8. The decode cost is
the time after the first token divided by the steps after it: one step reads the
whole cache, ``length`` to ``length + new tokens`` positions.

Each contender runs in a subprocess of its own (this script with ``--worker``), which
loads its model once and then answers one measurement at a time: the contenders
alternate, measurement after measurement, so they see the same load. The peak memory
of a measurement is the resident-set high-water mark of its worker (``VmHWM``, reset
before each measurement through ``/proc/self/clear_refs``; the first round's, the
lengths growing within a round: ONNX Runtime's arena keeps what it once took, so a
later round would show the longest prompt's peak everywhere): ONNX Runtime's arenas and
genai's buffers are native allocations that ``tracemalloc`` does not see, and one
process per contender keeps the torch model out of the ONNX workers' figure. The
table gives the medians over ``--repeat`` rounds, the spread ``(max - min) / median``,
the peak, and what the cache and the weights alone take (``cache MiB``: keys and
values of every layer at ``length + new tokens`` positions).

The hardware bound, as gpt-fast reports it: the memory bandwidth is measured once at
the start (:func:`diag.helpers.bandwidth.measure_bandwidth`, a torch sum over 512 MiB
with the bench's threads, median of 5), ``step_MiB`` is what a decode step must read
(the weights, :func:`~diag.helpers.bandwidth.decode_weight_bytes`, and the cache at
the mean position of the decode steps, ``length + new tokens / 2``), ``bound_ms`` that
read at the measured bandwidth, and ``%_of_bound`` = ``bound_ms`` / the measured
``decode_ms/step``: 100 % is a step as fast as the memory allows (a static cache that
attends over its whole buffer reads more than the bound counts, and shows it).

Then the ratios the targets of issue 15 name: ``onnx_generate`` decode at the longest
length vs the shortest (batch 1, target >= 0.85), vs genai fp32 at the longest
(target >= 1.2), and the prefill of the 1637-token prompt vs ``model.generate``'s
(target <= 1), and a plot (``--plot``, written atomically).

``onnx_generate`` prefills a prompt longer than 256 tokens in chunks
(:mod:`diag.ort.chunked_prefill`); ``--contenders ... "onnx_generate one-shot
prefill"`` adds it with the prompt in one step, as before, to compare in one run.

Usage::

    python bench/bench_context.py                      # 128 512 1024 1637 2048, batch 1 and 8
    python bench/bench_context.py --quick              # 128 and 512, batch 1, 8 tokens, 1 round
    python bench/bench_context.py --contenders onnx_generate "genai fp32"

The machine may be shared: read the ratios (same run), not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pandas
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_onnx_generate import _timed  # noqa: E402
from bench_other_exporters import build as genai_build  # noqa: E402
from bench_other_exporters import genai_generate  # noqa: E402
from prompts import PROMPTS  # noqa: E402

from diag.export import export_causal_lm  # noqa: E402
from diag.export.plan.export_key import cache_dir  # noqa: E402
from diag.helpers.atomic_write import write_atomically  # noqa: E402
from diag.helpers.bandwidth import (  # noqa: E402
    MIN_MIB,
    bandwidth_bound_ms,
    decode_weight_bytes,
    measure_bandwidth,
    percent_of_bound,
)
from diag.models import load_pretrained  # noqa: E402

CONTENDERS = (
    "model.generate", "onnx_generate", "onnx_generate static", "onnx_generate gqa",
    "onnx_generate gqa static", "genai fp32",
)
#: not in the default run: onnx_generate with its prefill in one step
#: (``open_ort_backend(session, prefill_chunk=None)``, what it did before diag.ort.chunked_prefill)
ONE_SHOT = "onnx_generate one-shot prefill"
MODEL = "smollm2-135m-instruct"
#: the prompt length the issue's prefill target names
PREFILL_TARGET_LENGTH = 1637


# ---------------------------------------------------------------- pure functions
def context_ids(token_ids: Sequence[int], length: int, batch: int, shift: int) -> torch.Tensor:
    """``[batch, length]`` int64 prompts cut from ``token_ids`` repeated: row ``r``
    starts ``r * shift`` tokens further, so the rows differ and none is padded."""
    if not token_ids:
        raise ValueError("context_ids needs at least one token to repeat")
    need = length + (batch - 1) * shift
    reps = -(-need // len(token_ids))
    stream = torch.tensor(list(token_ids) * reps, dtype=torch.int64)
    return torch.stack([stream[r * shift : r * shift + length] for r in range(batch)])


def cache_mib(config: Any, batch: int, positions: int, itemsize: int = 4) -> float:
    """MiB of keys and values of every layer at ``positions`` positions."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * batch * heads * positions * head_dim * itemsize / 2**20


def add_bandwidth_bound(
    table: pandas.DataFrame, config: Any, weight_bytes: int, new_tokens: int, gb_per_s: float
) -> pandas.DataFrame:
    """:func:`summarize`'s table with the bandwidth bound of a decode step: ``step_MiB``
    (the weights and the cache at the mean position of the decode steps), ``bound_ms``
    (that read at ``gb_per_s`` GB/s) and ``%_of_bound`` (bound / ``decode_ms/step``)."""
    table = table.copy()
    step_bytes = [
        weight_bytes + cache_mib(config, b, n + new_tokens / 2) * 2**20
        for b, n in zip(table.batch, table.length, strict=True)
    ]
    table["step_MiB"] = [b / 2**20 for b in step_bytes]
    table["bound_ms"] = [bandwidth_bound_ms(b, gb_per_s) for b in step_bytes]
    table["%_of_bound"] = [
        percent_of_bound(bound, measured)
        for bound, measured in zip(table.bound_ms, table["decode_ms/step"], strict=True)
    ]
    return table


def summarize(records: Sequence[dict]) -> pandas.DataFrame:
    """One row per (contender, batch, length) of the measurements ``records`` (dicts
    with ``contender``, ``batch``, ``length``, ``new_tokens``, ``prefill_s``,
    ``decode_s``, ``peak_mib``, ``same_tokens``, in the order measured): medians,
    spreads, the peak of the first round."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["contender"], r["batch"], r["length"]), []).append(r)
    rows = []
    for (name, batch, length), rs in groups.items():
        prefill = [r["prefill_s"] * 1e3 for r in rs]
        decode = [1e3 * r["decode_s"] / max(r["new_tokens"] - 1, 1) for r in rs]
        rows.append(
            {
                "contender": name,
                "batch": batch,
                "length": length,
                "prefill_ms": statistics.median(prefill),
                "prefill_spread": spread(prefill),
                "decode_ms/step": statistics.median(decode),
                "decode_spread": spread(decode),
                # the first round's: ONNX Runtime's arena keeps what a longer prompt
                # took, and the lengths grow within a round
                "peak_MiB": rs[0]["peak_mib"],
                "same_tokens": all(r.get("same_tokens", True) for r in rs),
                "rounds": len(rs),
            }
        )
    return pandas.DataFrame(rows).sort_values(["batch", "length", "contender"], kind="stable")


def spread(values: Sequence[float]) -> float:
    """``(max - min) / median`` of ``values`` (0 for one value)."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def value(table: pandas.DataFrame, contender: str, batch: int, length: int, column: str) -> float:
    """One cell of :func:`summarize`'s table, NaN when it was not measured."""
    sel = table[
        (table.contender == contender) & (table.batch == batch) & (table.length == length)
    ][column]
    return float(sel.iloc[0]) if len(sel) else float("nan")


def target_ratios(table: pandas.DataFrame, onnx: str = "onnx_generate") -> dict[str, float]:
    """The ratios of issue 15's targets from :func:`summarize`'s table (batch 1; NaN
    where a contender or a length was not measured): decode speed at the longest
    length / at the shortest, decode speed vs genai fp32 at the longest, prefill of
    :data:`PREFILL_TARGET_LENGTH` tokens vs ``model.generate``'s."""
    lengths = sorted(set(table[table.batch == 1].length))
    if not lengths:
        return {}
    short, long = lengths[0], lengths[-1]
    step = "decode_ms/step"
    return {
        f"{onnx} decode speed at {long} / at {short} (target >= 0.85)": value(
            table, onnx, 1, short, step
        )
        / value(table, onnx, 1, long, step),
        f"{onnx} / genai fp32 decode speed at {long} (target >= 1.2)": value(
            table, "genai fp32", 1, long, step
        )
        / value(table, onnx, 1, long, step),
        f"{onnx} / model.generate prefill time at {PREFILL_TARGET_LENGTH} (target <= 1)": value(
            table, onnx, 1, PREFILL_TARGET_LENGTH, "prefill_ms"
        )
        / value(table, "model.generate", 1, PREFILL_TARGET_LENGTH, "prefill_ms"),
    }


def save_plot(table: pandas.DataFrame, path: str) -> str:
    """Prefill time and decode ms/step against the length, one line per contender and
    batch, written to ``path`` (PNG) atomically; returns the absolute path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for (name, batch), sub in table.groupby(["contender", "batch"], sort=False):
        sub = sub.sort_values("length")
        style = "-o" if batch == 1 else "--s"
        axes[0].plot(sub.length, sub.prefill_ms / 1e3, style, label=f"{name}, batch {batch}")
        axes[1].plot(sub.length, sub["decode_ms/step"], style, label=f"{name}, batch {batch}")
    axes[0].set(xlabel="prompt tokens", ylabel="prefill s", title="prefill")
    axes[1].set(xlabel="cached positions", ylabel="ms per decode step", title="decode step")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# ---------------------------------------------------------------- the workers
def static_export_reason() -> str | None:
    """None when ``export_causal_lm`` takes ``cache=`` (the static layout), else why
    the static column is skipped."""
    if "cache" in inspect.signature(export_causal_lm).parameters:
        return None
    return "export_causal_lm has no cache= argument here (no static-cache export)"


def reset_peak() -> None:
    """Resets this process's resident-set high-water mark (Linux ``clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mib() -> float:
    """This process's resident-set high-water mark (``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_runner(name: str, source: str, threads: int):
    """``run(ids, new_tokens) -> (tokens of row 0, prefill s, decode s)`` for one
    contender; ``source`` is the model name, the ONNX file or genai's folder."""
    torch.set_num_threads(threads)
    if name == "model.generate":
        model, _ = load_pretrained(source)
        model = model.eval().to(torch.float32)

        def run(ids, n):
            def call(streamer):
                with torch.inference_mode():
                    return model.generate(
                        ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                        eos_token_id=[], do_sample=False, streamer=streamer,
                    )  # fmt: skip

            prefill, decode, _, out = _timed(call)
            return out[0, ids.shape[1] :].tolist(), prefill, decode

        return run
    if name.startswith("onnx_generate"):
        from diag.generation import onnx_generate, open_steps
        from diag.ort import make_session, open_ort_backend

        # no spinning: the idle workers would busy-wait against the one measured
        session = make_session(source, intra_op_num_threads=threads, allow_spinning=False)
        backend = (
            open_ort_backend(session, prefill_chunk=None)
            if name == ONE_SHOT
            else open_steps(session).backend
        )

        def run(ids, n):
            res = onnx_generate(
                backend, ids, max_new_tokens=n, eos_token_id=[], do_sample=False,
                return_result=True,
            )  # fmt: skip
            return res.sequences[0, ids.shape[1] :].tolist(), res.prefill_seconds, res.decode_seconds

        return run
    if name == "genai fp32":
        import onnxruntime_genai as og

        config = og.Config(source)
        # the same threads as the others, and no spinning (see the ONNX workers)
        options = {"intra_op_num_threads": threads, "allow_spinning": "0"}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        og_model = og.Model(config)

        def run(ids, n):
            tokens, prefill, decode = genai_generate(og_model, ids, n)
            return tokens[0], prefill, decode

        return run
    raise ValueError(f"unknown contender {name!r}; known: {CONTENDERS}")


def worker(name: str, source: str, threads: int) -> None:
    """The subprocess of one contender: one JSON request a line on stdin
    (``{"ids": [[...]], "new_tokens": n}``), one JSON answer a line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # the libraries' prints must not mix with the answers
    run = make_runner(name, source, threads)
    out.write(json.dumps({"ready": True, "rss_mib": peak_mib()}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        ids = torch.tensor(request["ids"], dtype=torch.int64)
        reset_peak()
        tokens, prefill, decode = run(ids, int(request["new_tokens"]))
        answer = {"tokens": tokens, "prefill_s": prefill, "decode_s": decode, "peak_mib": peak_mib()}
        out.write(json.dumps(answer) + "\n")
        out.flush()


class Worker:
    """A contender's subprocess (:func:`worker`); :meth:`ask` measures one prompt."""

    def __init__(self, name: str, source: str, threads: int) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, source, str(threads)]
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.loaded_mib = self._read()["rss_mib"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker of {self.name!r} died (exit code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, ids: torch.Tensor, new_tokens: int) -> dict:
        self.proc.stdin.write(json.dumps({"ids": ids.tolist(), "new_tokens": new_tokens}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---------------------------------------------------------------- the run
def sources(names: Sequence[str], model: Any, max_positions: int) -> dict[str, str]:
    """What each contender loads (exports and builds made here, cached); the
    contenders that cannot run are dropped with a printed reason."""
    out: dict[str, str] = {}
    for name in names:
        if name == "model.generate":
            out[name] = MODEL
        elif name in ("onnx_generate", ONE_SHOT):
            out[name] = export_causal_lm(model).filename
        elif name == "onnx_generate static":
            reason = static_export_reason()
            if reason:
                print(f"[skipped {name!r}: {reason}]")
                continue
            out[name] = export_causal_lm(model, cache="static", max_length=max_positions).filename
        elif name in ("onnx_generate gqa", "onnx_generate gqa static"):
            # GroupQueryAttention (export_causal_lm's attention="gqa"), dynamic or static
            if "attention" not in inspect.signature(export_causal_lm).parameters:
                print(f"[skipped {name!r}: export_causal_lm has no attention= argument here]")
                continue
            static = {"cache": "static", "max_length": max_positions} if name.endswith("static") else {}
            out[name] = export_causal_lm(model, attention="gqa", **static).filename
        elif name == "genai fp32":
            folder = os.path.join(cache_dir(), "genai", f"{MODEL}-fp32-cpu")
            if not os.path.exists(os.path.join(folder, "genai_config.json")):
                try:
                    genai_build(folder)
                except (OSError, subprocess.CalledProcessError) as e:
                    print(f"[skipped {name!r}: onnxruntime-genai's builder failed: {e}]")
                    continue
            out[name] = folder
    return out


def main(argv: list[str] | None = None) -> pandas.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 1637, 2048])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--contenders", nargs="+", default=list(CONTENDERS), choices=[*CONTENDERS, ONE_SHOT]
    )
    parser.add_argument("--quick", action="store_true", help="128 and 512, batch 1, 8 tokens, 1 round")
    parser.add_argument("--plot", default="bench_context.png", help="the plot ('' for none)")
    parser.add_argument("--csv", default="", help="writes the table there too")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.batch, args.new_tokens, args.repeat = [128, 512], [1], 8, 1
    from diag.ort.session import machine_is_busy, physical_cores

    threads = args.threads
    if threads is None:
        threads = physical_cores()
        if machine_is_busy():
            # measured here: torch's OpenMP threads stall when the cores are
            # oversubscribed (model.generate 6x slower with 2 threads than with 1 at a
            # load of 11 on 2 cores); one thread for every contender keeps it fair
            threads = 1
            print(f"[the machine is busy (load {os.getloadavg()[0]:.1f}): 1 thread each]")
    # the machine's limit, before the workers load: what a decode step could reach
    gb_per_s = measure_bandwidth(threads=threads)
    print(f"[memory bandwidth: {gb_per_s:.1f} GB/s (torch sum over {MIN_MIB} MiB, {threads} threads)]")
    model, tokenizer = load_pretrained(MODEL)
    text_ids = tokenizer("\n\n".join(PROMPTS))["input_ids"]
    shift = len(text_ids) // len(PROMPTS)
    srcs = sources(args.contenders, model.eval().to(torch.float32), max(args.lengths) + args.new_tokens)
    config = model.config
    weight_bytes = decode_weight_bytes(model)
    del model

    workers = {name: Worker(name, src, threads) for name, src in srcs.items()}
    records: list[dict] = []
    try:
        warm = context_ids(text_ids, 16, 1, shift)
        for w in workers.values():  # first-call allocations, kernel selection
            w.ask(warm, 4)
        for _ in range(args.repeat):
            for batch in args.batch:
                for length in args.lengths:
                    ids = context_ids(text_ids, length, batch, shift)
                    reference = None
                    for name, w in workers.items():  # alternated
                        answer = w.ask(ids, args.new_tokens)
                        reference = answer["tokens"] if reference is None else reference
                        records.append(
                            {
                                "contender": name, "batch": batch, "length": length,
                                "new_tokens": args.new_tokens, "prefill_s": answer["prefill_s"],
                                "decode_s": answer["decode_s"], "peak_mib": answer["peak_mib"],
                                "same_tokens": answer["tokens"] == reference,
                            }
                        )  # fmt: skip
                    done = ", ".join(
                        f"{r['contender']} {r['prefill_s']:.2f} s + "
                        f"{1e3 * r['decode_s'] / max(r['new_tokens'] - 1, 1):.0f} ms/step "
                        f"{r['peak_mib']:.0f} MiB"
                        for r in records[-len(workers) :]
                    )
                    print(f"[batch {batch}, {length} tokens: {done}]", flush=True)
        loaded = {name: w.loaded_mib for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()

    table = summarize(records)
    table["cache_MiB"] = [
        cache_mib(config, b, n + args.new_tokens) for b, n in zip(table.batch, table.length, strict=True)
    ]
    table["loaded_MiB"] = [loaded[c] for c in table.contender]
    table = add_bandwidth_bound(table, config, weight_bytes, args.new_tokens, gb_per_s)
    pandas.set_option("display.width", 250)
    pandas.set_option("display.max_columns", 20)
    print(
        f"\n{MODEL} float32, {threads} threads, {args.new_tokens} new tokens, median of "
        f"{args.repeat} alternated rounds; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
        "same_tokens: row 0 generated what the first contender generated; memory bandwidth "
        f"{gb_per_s:.1f} GB/s, bound_ms: step_MiB (weights + cache) read at that rate"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print()
    for name, ratio in target_ratios(table).items():
        print(f"{name:75s} {ratio:6.2f}")
    for other in ("onnx_generate static", "onnx_generate gqa", "onnx_generate gqa static"):
        if other in srcs:
            for name, ratio in target_ratios(table, other).items():
                print(f"{name:75s} {ratio:6.2f}")
    if args.plot:
        print(f"plot: {save_plot(table, args.plot)}")
    if args.csv:
        write_atomically(args.csv, lambda tmp: table.to_csv(tmp, index=False))
    return table


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            main()
