"""Beam search speed: ``model.generate``, ``diag.generate``, ``onnx_generate`` and
onnxruntime-genai's own beam search, in one run, and the share of the cache reorder in
``onnx_generate``'s decode steps.

SmolLM2-135M-Instruct in float32, batch 1, ``--beams`` hypotheses, ``--new-tokens``
new tokens with eos ignored (every hypothesis runs to the end: the same work on every
side), one code prompt. ``onnx_generate`` runs diag's export (cached); genai runs its
own build of the model (``python -m onnxruntime_genai.models.builder -p fp32 -e cpu``,
into a temporary folder unless ``--genai-folder`` is given). ``onnx_generate`` also
drives genai's build (``onnx_generate (genai file)``): against genai's beam search,
the same graph with diag's loop around it (the loop's cost); against ``onnx_generate``
on diag's export, the same loop on the two graphs (the graph's cost). Each contender is warmed
up, then they alternate ``--repeat`` times; the table gives the median seconds, their
spread (min - max) and the new tokens per second of the best hypothesis. Then the
tokens each produced, and the reorder's share: the seconds ``onnx_generate`` spent in
:meth:`~diag.ort.backend.OrtBackend.reorder` over its decode seconds.

Usage::

    python bench/bench_beam.py                 # 4 beams, 50 new tokens, 3 repeats
    python bench/bench_beam.py --quick         # 10 new tokens, 1 repeat, no genai build
    python bench/bench_beam.py --genai-folder genai-smollm2-fp32

The machine may be shared: read the ratios of one run, with the load printed beside
them, rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diag.export import export_causal_lm  # noqa: E402
from diag.generation import generate, onnx_generate, open_steps  # noqa: E402

PROMPT = "def print_prime(n):"


class ReorderClock:
    """Counts the seconds and calls of a backend's ``reorder`` while installed
    (:meth:`installed`): the cache reorder's share of a generation."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.seconds = 0.0
        self.calls = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[ReorderClock]:
        inner = self.backend.reorder

        def timed(past: Any, rows: torch.Tensor) -> Any:
            begin = time.perf_counter()
            try:
                return inner(past, rows)
            finally:
                self.seconds += time.perf_counter() - begin
                self.calls += 1

        self.backend.reorder = timed
        try:
            yield self
        finally:
            del self.backend.reorder  # the class's method again


def reorder_share(backend: Any, ids: torch.Tensor, **options: Any) -> tuple[float, int, float]:
    """One ``onnx_generate`` call on ``backend``: (seconds in ``reorder``, its calls,
    decode seconds)."""
    with ReorderClock(backend).installed() as clock:
        result = onnx_generate(backend, ids, return_result=True, **options)
    return clock.seconds, clock.calls, result.decode_seconds


def genai_beam_search(og_model: Any, ids: torch.Tensor, new_tokens: int, beams: int) -> list[int]:
    """onnxruntime-genai's beam search on ``ids`` (one row), exactly ``new_tokens`` new
    tokens (eos ignored: ``min_length`` is ``max_length``): the best hypothesis's."""
    import onnxruntime_genai as og

    length = int(ids.shape[1])
    params = og.GeneratorParams(og_model)
    total = length + new_tokens
    params.set_search_options(
        max_length=total, min_length=total, do_sample=False, num_beams=beams, batch_size=1
    )
    gen = og.Generator(og_model, params)
    gen.append_tokens(ids.numpy().astype(np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)[length:]]


def build_genai(folder: str) -> None:
    from diag.models.pretrained import ensure_model_folder

    src = ensure_model_folder("smollm2-135m-instruct")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", folder]
    subprocess.run([*cmd, "-p", "fp32", "-e", "cpu"], check=True, capture_output=True)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def alternate(
    contenders: dict[str, Callable[[], list[int]]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Each contender once untimed, then all in turn ``repeat`` times (each sees the same
    load): the seconds of each call and the tokens of the last."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    tokens: dict[str, list[int]] = {}
    for _ in range(repeat):
        for name, fn in contenders.items():
            begin = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - begin)
    return times, tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--genai-folder", help="a genai fp32 folder (default: built now)")
    parser.add_argument("--no-genai", action="store_true", help="leave genai out")
    parser.add_argument("--quick", action="store_true", help="10 new tokens, 1 repeat, no genai")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeat, args.no_genai = 10, 1, True

    from diag.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m-instruct")
    model.eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    n, beams = args.new_tokens, args.beams
    # eos ignored on every side: each hypothesis generates n tokens
    options = dict(max_new_tokens=n, num_beams=beams, eos_token_id=None)
    backend = open_steps(export_causal_lm(model, verify=False)).backend
    start = ids.shape[1]

    def hf() -> list[int]:
        with torch.no_grad():
            return model.generate(ids, attention_mask=torch.ones_like(ids), **options)[
                0, start:
            ].tolist()

    def dg() -> list[int]:
        return generate(model, ids, **options)[0, start:].tolist()

    def ox() -> list[int]:
        return onnx_generate(backend, ids, **options)[0, start:].tolist()

    contenders: dict[str, Callable[[], list[int]]] = {
        "model.generate": hf,
        "diag.generate": dg,
        "onnx_generate": ox,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_genai:
            import onnxruntime_genai as og

            folder = args.genai_folder
            if folder is None:
                folder = os.path.join(tmp, "genai-fp32")
                build_genai(folder)
            og_model = og.Model(folder)
            contenders["genai beam search"] = lambda: genai_beam_search(og_model, ids, n, beams)
            genai_file = open_steps(folder).backend
            contenders["onnx_generate (genai file)"] = lambda: onnx_generate(
                genai_file, ids, **options
            )[0, start:].tolist()
        times, tokens = alternate(contenders, args.repeat)
    reorder_seconds, calls, decode_seconds = reorder_share(backend, ids, **options)

    print(f"SmolLM2-135M float32, batch 1, {beams} beams, {n} new tokens, {args.repeat} repeats")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"load (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'contender':<26} {'median s':>9} {'min - max s':>15} {'tokens/s':>9}")
    speed = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        speed[name] = n / median
        print(f"{name:<26} {median:9.3f} {min(ts):7.3f} - {max(ts):5.3f} {speed[name]:9.1f}")
    for name in speed:
        if name != "onnx_generate":
            print(f"onnx_generate / {name}: {speed['onnx_generate'] / speed[name]:.2f}x")
    if "genai beam search" in speed:
        loop = speed["onnx_generate (genai file)"] / speed["genai beam search"]
        graph = speed["onnx_generate"] / speed["onnx_generate (genai file)"]
        print(f"the loop: onnx_generate / genai beam search on genai's file: {loop:.2f}x")
        print(f"the graph: diag's export / genai's file, both in onnx_generate: {graph:.2f}x")
    print(
        f"reorder: {reorder_seconds * 1e3:.1f} ms in {calls} calls, "
        f"{100 * reorder_seconds / decode_seconds:.1f}% of onnx_generate's decode seconds"
    )
    reference = tokens["model.generate"]
    for name, row in tokens.items():
        same = "same as model.generate" if row == reference else "DIFFERS from model.generate"
        print(f"{name:<26} {same}: {tokenizer.decode(row)!r}")


if __name__ == "__main__":
    main()
