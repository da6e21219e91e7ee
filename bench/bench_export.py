"""Export time of a causal LM (SmolLM2-135M-Instruct by default), split by step.

Prints the seconds spent in torch.export, in the translation to ONNX (decompositions
included), in the optimisation (onnxscript optimizer + weight transpositions), in
saving, and, separately, in the validation against torch; then the validation table.
Reference point on a 2-core machine: about 140 s for a known public library's export
of the same model; the aim is below 60 s.

The machine is shared: run it once, when it is quiet, and read the load average it
prints next to the figures.

Usage::

    python bench/bench_export.py                      # SmolLM2, fetched on first use
    python bench/bench_export.py --model /path/to/hf  # a local Hugging Face folder
    python bench/bench_export.py --model tiny:llama --no-verify
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import onnx

# run from a checkout without installing the package
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="name or local path")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-verify", action="store_true", help="skip the validation")
    parser.add_argument("--output", default=None, help="where to write the model (temp dir)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from diag.export import export_causal_lm
    from diag.models import load_pretrained

    begin = time.perf_counter()
    model, _ = load_pretrained(args.model, progress=False)
    load = time.perf_counter() - begin
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model} ({params / 1e6:.1f}M parameters), loaded in {load:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        filename = args.output or os.path.join(tmp, "model.onnx")
        begin = time.perf_counter()
        result = export_causal_lm(model, filename, verify=not args.no_verify, force=True)
        wall = time.perf_counter() - begin
        nodes = len(onnx.load(result.filename, load_external_data=False).graph.node)
        sizes = {
            f: os.path.getsize(os.path.join(os.path.dirname(filename), f))
            for f in os.listdir(os.path.dirname(filename))
            if f.startswith(os.path.basename(filename))
        }

    figures = dict(result.timings.as_dict())
    figures["validation"] = result.validation_time
    figures["wall (export_causal_lm)"] = wall
    print(f"{'step':<26}{'seconds':>10}")
    for step, seconds in figures.items():
        print(f"{step:<26}{seconds:>10.1f}")
    print(
        f"export total (without validation): {result.timings.total:.1f}s, aim < 60s, reference ~140s"
    )
    print(f"ratio to the reference: {result.timings.total / 140:.2f}")
    print("files:", {k: f"{v / 2**20:.1f} MB" for k, v in sorted(sizes.items())})
    if result.timings.notes:
        tied = [n for n in result.timings.notes if "tied" in n]
        print(
            f"graph: {len(result.timings.notes) - len(tied)} weights pre-transposed, "
            f"tied weights read by Gemm(transB=1): {[n.split(':')[0] for n in tied]}"
        )
    if result.fusions:
        print(f"fusions: {result.fusions}; {nodes} nodes")
    if result.validation is not None:
        print(result.validation.table())
    if hasattr(os, "getloadavg"):
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    return figures


if __name__ == "__main__":
    main()
