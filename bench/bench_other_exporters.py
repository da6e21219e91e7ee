"""Tokens per second of ``diag.onnx_generate`` vs onnxruntime-genai's own ``Generator``
on the same folder built by onnxruntime-genai's model builder (same run, same prompt).

SmolLM2-135M-Instruct through ``python -m onnxruntime_genai.models.builder -p fp32 -e
cpu`` (built into a temporary folder unless ``--folder`` is given), greedy, batch 1,
``--new-tokens`` new tokens (eos ignored on both sides). Both contenders are warmed up,
then alternate ``--repeat`` times; the table gives the median time of each with its
spread (min - max), the tokens per second, and the ratio ``onnx_generate / genai`` of
the median tokens per second (>= 1 means diag is at least as fast), and checks that
both generated the same tokens.

Usage::

    python bench/bench_other_exporters.py              # 100 new tokens, 5 repeats
    python bench/bench_other_exporters.py --quick      # 20 new tokens, 2 repeats
    python bench/bench_other_exporters.py --folder genai-smollm2-fp32

The machine may be shared: compare the ratio, measured in one run, not the absolute
figures across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


from diag.generation import onnx_generate, open_steps  # noqa: E402
from diag.models.pretrained import ensure_model_folder, load_tokenizer  # noqa: E402

PROMPT = "def print_prime(n):"


def build(folder: str) -> None:
    src = ensure_model_folder("smollm2-135m-instruct")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", folder]
    subprocess.run([*cmd, "-p", "fp32", "-e", "cpu"], check=True, capture_output=True)


def genai_generate(
    og_model: Any, ids: torch.Tensor, new_tokens: int
) -> tuple[list[list[int]], float, float]:
    """Greedy generation of exactly ``new_tokens`` per row (eos ignored: ``min_length``
    is ``max_length``) by onnxruntime-genai's ``Generator`` on ``ids`` (``[batch, seq]``,
    no padding). Returns the new tokens of each row, the prefill seconds (the prompt to
    the first token) and the decode seconds (the tokens after the first)."""
    import onnxruntime_genai as og

    batch, length = ids.shape
    params = og.GeneratorParams(og_model)
    total = length + new_tokens
    params.set_search_options(
        max_length=total, min_length=total, do_sample=False, batch_size=batch
    )
    gen = og.Generator(og_model, params)
    begin = time.perf_counter()
    gen.append_tokens(ids.numpy().astype(np.int32))
    gen.generate_next_token()
    first = time.perf_counter()
    while not gen.is_done():
        gen.generate_next_token()
    end = time.perf_counter()
    tokens = [[int(t) for t in gen.get_sequence(row)[length:]] for row in range(batch)]
    return tokens, first - begin, end - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", help="a genai fp32 folder (default: built now)")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20 new tokens, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.repeat = 20, 2
    import onnxruntime_genai as og

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = os.path.join(tmp, "genai-fp32")
            build(folder)
        tok = load_tokenizer("smollm2-135m-instruct")
        ids = tok(PROMPT, return_tensors="pt").input_ids
        n = args.new_tokens

        backend = open_steps(folder).backend
        og_model = og.Model(folder)

        def run_diag() -> list[int]:
            out = onnx_generate(backend, ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
            return out[0, ids.shape[1] :].tolist()

        def run_genai() -> list[int]:
            return genai_generate(og_model, ids, n)[0][0]

        contenders = {"onnx_generate": run_diag, "genai Generator": run_genai}
        for fn in contenders.values():  # warm-up: first-call allocations
            fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        tokens: dict[str, list[int]] = {}
        for _ in range(args.repeat):
            for name, fn in contenders.items():  # alternating: both see the same load
                begin = time.perf_counter()
                tokens[name] = fn()
                times[name].append(time.perf_counter() - begin)

    print(f"SmolLM2-135M genai fp32, batch 1, greedy, {n} new tokens, {args.repeat} repeats")
    print(f"{'contender':<16} {'median s':>9} {'min - max s':>15} {'tokens/s':>9}")
    speed = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        speed[name] = n / med
        print(f"{name:<16} {med:9.3f} {min(ts):7.3f} - {max(ts):5.3f} {speed[name]:9.1f}")
    print(f"ratio onnx_generate / genai (median tokens/s): "
          f"{speed['onnx_generate'] / speed['genai Generator']:.2f}x")
    same = tokens["onnx_generate"] == tokens["genai Generator"]
    print(f"same tokens: {same}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
