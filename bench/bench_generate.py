"""Tokens per second of ``model.generate`` vs ``diag.generate`` (same run, same inputs).

Greedy decoding of SmolLM2-135M-Instruct in float32, ``max_new_tokens`` new tokens per
row with eos ignored (every row produces all of them), at batch 1 and batch 8 (eight
different prompts, left-padded). Each configuration is warmed up, then both functions
alternate ``--repeat`` times; the table reports the best time of each and the ratio
``diag / transformers`` of tokens per second (> 1 means diag is faster), the ratio of
the median times, and a check that both produced the same tokens.

Usage::

    python bench/bench_generate.py            # 100 new tokens, batch 1 and 8, 5 repeats
    python bench/bench_generate.py --quick    # 20 new tokens, 1 repeat: a smoke check
    python bench/bench_generate.py --model /path/to/hf/folder

The machine may be shared: compare the ratio, measured in one run, not the absolute
figures across runs. On a loaded machine, ``--threads 1`` gives steadier figures: two
threads that wait on each other while other processes hold the cores make every
batched matmul many times slower, for both functions alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pandas
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prompts import PROMPTS  # noqa: E402

from diag.generation import generate  # noqa: E402
from diag.models import load_pretrained  # noqa: E402


def _time(fn) -> tuple[float, torch.Tensor]:
    begin = time.perf_counter()
    out = fn()
    return time.perf_counter() - begin, out


def bench(model, tokenizer, batch: int, new_tokens: int, repeat: int, warmup: int) -> dict:
    enc = tokenizer(PROMPTS[:batch], return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # min_new_tokens holds eos back in both functions: every row yields new_tokens tokens
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def hf():
        with torch.inference_mode():
            return model.generate(ids, attention_mask=mask, **kwargs)

    def dg():
        return generate(model, ids, mask, **kwargs)

    for _ in range(warmup):
        hf()
        dg()
    hf_times, dg_times = [], []
    same = True
    for _ in range(repeat):
        t, a = _time(hf)
        hf_times.append(t)
        t, b = _time(dg)
        dg_times.append(t)
        same = same and torch.equal(a, b)
    produced = batch * new_tokens
    # the best run is the least disturbed by other processes; the median shows the spread
    hf_t, dg_t = min(hf_times), min(dg_times)
    return {
        "batch": batch,
        "new_tokens": new_tokens,
        "prompt_len": ids.shape[1],
        "transformers_s": round(hf_t, 3),
        "diag_s": round(dg_t, 3),
        "transformers_tok/s": round(produced / hf_t, 1),
        "diag_tok/s": round(produced / dg_t, 1),
        "ratio_diag/transformers": round(hf_t / dg_t, 3),
        "ratio_of_medians": round(statistics.median(hf_times) / statistics.median(dg_times), 3),
        "same_tokens": same,
    }


def main(argv: list[str] | None = None) -> pandas.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="name or HF folder")
    parser.add_argument("--quick", action="store_true", help="20 tokens, 1 repeat, 1 warm-up")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    new_tokens, repeat, warmup = args.new_tokens, args.repeat, 2
    if args.quick:
        new_tokens, repeat, warmup = 20, 1, 1
    model, tokenizer = load_pretrained(args.model)
    model = model.eval().to(torch.float32)
    rows = [bench(model, tokenizer, b, new_tokens, repeat, warmup) for b in args.batch]
    df = pandas.DataFrame(rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(df.to_string(index=False))
    return df


if __name__ == "__main__":
    main()
