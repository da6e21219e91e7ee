"""Prefill of a long prompt with and without ``logits_to_keep``, and torch's, in one run.

SmolLM2-135M-Instruct in float32, batch 1, a prompt of ``--tokens`` tokens (the
benchmark prompts of ``prompts.py`` repeated, then cut): the time to the first token
of ``onnx_generate(..., max_new_tokens=1)`` on two exports, ``--before`` (a file
exported without the input: main's export, every position's logits computed and
returned) and the current export (``logits_to_keep``: the last position only), and of
``model.generate(..., max_new_tokens=1)`` (transformers computes the last position
only). The sessions are created beforehand; each function is warmed up, then the
three alternate ``--repeat`` times; the table shows the medians and the size of the
logits output of each export's prefill.

Usage::

    python bench/bench_prefill_logits.py --before /path/to/main/model.onnx
    python bench/bench_prefill_logits.py --before main.onnx --tokens 512 --repeat 3

The machine may be shared: read the ratios (measured in the same run) and the load
printed with them, rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prompts import PROMPTS  # noqa: E402

from diag import contract  # noqa: E402
from diag.export import export_causal_lm  # noqa: E402
from diag.generation import onnx_generate, open_steps  # noqa: E402
from diag.models import load_pretrained  # noqa: E402
from diag.ort import make_session  # noqa: E402
from diag.ort.session import physical_cores  # noqa: E402


def long_prompt(tokenizer, tokens: int) -> torch.Tensor:
    """``[1, tokens]`` ids: the benchmark prompts repeated until long enough, cut."""
    text = "\n\n".join(PROMPTS)
    ids = tokenizer(text, return_tensors="pt").input_ids
    while ids.shape[1] < tokens:
        ids = torch.cat([ids, ids], dim=1)
    return ids[:, :tokens]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="an export without logits_to_keep")
    parser.add_argument("--tokens", type=int, default=1637)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    model, tokenizer = load_pretrained("smollm2-135m-instruct", progress=False)
    model.eval()
    after = export_causal_lm(model).filename
    ids = long_prompt(tokenizer, args.tokens)
    mask = torch.ones_like(ids)
    backends = {}
    for name, path in (("onnx before", args.before), ("onnx logits_to_keep", after)):
        backend = open_steps(make_session(path, intra_op_num_threads=threads)).backend
        backends[name] = backend
        print(f"{name}: {path} (logits_to_keep input: {backend.contract.has_logits_to_keep})")

    def run_onnx(backend):
        return onnx_generate(backend, ids, mask, max_new_tokens=1, do_sample=False)

    def run_torch():
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False)

    runs = {name: (lambda b=b: run_onnx(b)) for name, b in backends.items()}
    runs["model.generate"] = run_torch
    first = {name: fn()[0, -1].item() for name, fn in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, fn in runs.items():  # alternate: a load change hits all three
            begin = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - begin)
    sizes = {}
    for name, backend in backends.items():
        feeds = backend.feeds_as_numpy()  # the last step run: the prefill
        logits = backend.session.run([contract.LOGITS], feeds)[0]
        sizes[name] = f"{list(logits.shape)} {logits.nbytes / 2**20:.1f} MiB"
    reference = statistics.median(times["model.generate"])
    print(
        f"\nSmolLM2 float32, prompt of {ids.shape[1]} tokens, batch 1, {threads} threads, "
        f"medians of {args.repeat}; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print(f"{'':<22}{'prefill s':>10}{'/ torch':>9}  first token  logits of the prefill")
    for name in runs:
        median = statistics.median(times[name])
        print(
            f"{name:<22}{median:>10.2f}{median / reference:>9.2f}  {first[name]:>11}  "
            f"{sizes.get(name, '[1, 1, 49152] (the last position)')}"
        )
    print("all times:", {k: [round(t, 2) for t in v] for k, v in times.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
