"""Decode speed of a mixture-of-experts decoder: ``model.generate`` against
``onnx_generate``, and the share of an ONNX decode step spent in the experts.

An untrained qwen3_moe-shaped model (hidden 1024, 16 heads over 8 key/value heads,
experts of 512, top-2, ``--layers`` layers) is built with 8 experts, then with 32:
the exported step gathers the weights of the ``top_k`` experts each token chose
(:mod:`diag.export.make.patches.experts_patches`), so its expert time should stay about
the same when the number of experts grows, while the weights on disk grow with it.

For each model: greedy decoding at batch 1, float32, ``--new-tokens`` tokens from an
8-token prompt (eos held back), ``model.generate`` and ``onnx_generate`` alternated
``--repeat`` times after a warm-up; the table gives the median tokens/s of each, the
spread (min-max), their ratio, whether both produced the same tokens, and, from ONNX
Runtime's profiler, the mean decode step's kernel time and the share of it in the
nodes of the routed experts (the nodes whose module scope, written by the exporter,
is under ``.mlp.experts``) and of the router (``.mlp.gate``).

Usage::

    python bench/bench_moe.py                  # 4 layers, 64 new tokens, 5 repeats
    python bench/bench_moe.py --quick          # 2 layers, 8 new tokens, 1 repeat

Run on a quiet machine and compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import onnx
import pandas
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diag.export import export_causal_lm  # noqa: E402
from diag.generation import onnx_generate  # noqa: E402
from diag.models.untrained import get_tiny_config, make_untrained_model  # noqa: E402
from diag.ort import open_ort_backend  # noqa: E402
from diag.ort.profiling import read_kernels  # noqa: E402
from diag.ort.session import make_session  # noqa: E402
from diag.testing.perturb import node_scopes  # noqa: E402

#: the module scopes whose nodes count as the experts' work and as the router's
EXPERTS_SCOPE, ROUTER_SCOPE = ".mlp.experts", ".mlp.gate"


def moe_model(layers: int, experts: int, top_k: int) -> torch.nn.Module:
    """The zoo's qwen3_moe config at realistic widths (untrained, seeded)."""
    config = get_tiny_config("qwen3_moe")
    config.hidden_size, config.num_hidden_layers = 1024, layers
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 16, 8, 64
    config.moe_intermediate_size, config.intermediate_size = 512, 2048
    config.num_experts, config.num_experts_per_tok = experts, top_k
    config.initializer_range = 0.02
    return make_untrained_model(config)


def node_scopes_of(path: str) -> dict[str, list[str]]:
    """ONNX node name -> the module scopes the exporter recorded for it."""
    graph = onnx.load(path, load_external_data=False).graph
    return {node.name: node_scopes(node) for node in graph.node}


def decode_shares(path: str, ids: torch.Tensor, new_tokens: int) -> dict:
    """Mean kernel ms of a decode step and the experts' and router's shares of it."""
    session = make_session(path, enable_profiling=True)
    onnx_generate(open_ort_backend(session), ids, max_new_tokens=new_tokens, eos_token_id=[])
    trace = session.end_profiling()
    try:
        kernels = read_kernels(trace)
    finally:
        os.remove(trace)
    scopes = node_scopes_of(path)
    decode = kernels[kernels["run"] >= 1]  # run 0 is the prefill
    steps = max(int(decode["run"].nunique()), 1)

    def ms_in(scope: str) -> float:
        inside = decode["node"].map(lambda n: any(scope in s for s in scopes.get(n, [])))
        return float(decode[inside]["ms"].sum())

    total, experts, router = decode["ms"].sum(), ms_in(EXPERTS_SCOPE), ms_in(ROUTER_SCOPE)
    return {
        "step_kernel_ms": total / steps,
        "experts_ms": experts / steps,
        "experts_%": 100 * experts / (total or 1.0),
        "router_%": 100 * router / (total or 1.0),
    }


def bench(experts: int, args: argparse.Namespace, folder: str) -> dict:
    model = moe_model(args.layers, experts, args.top_k)
    path = os.path.join(folder, f"moe{experts}", "model.onnx")
    begin = time.perf_counter()
    export_causal_lm(model, path, verify=False)
    export_s = time.perf_counter() - begin
    backend = open_ort_backend(make_session(path))
    ids = torch.randint(3, 1000, (1, 8), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    def hf() -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(ids, **kwargs)

    def ort() -> torch.Tensor:
        return onnx_generate(backend, ids, **kwargs, generation_config=model.generation_config)

    hf(), ort()  # warm-up
    hf_s, ort_s, same = [], [], True
    for _ in range(args.repeat):
        for fn, times in ((hf, hf_s), (ort, ort_s)):
            begin = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - begin)
            if fn is hf:
                expected = out
            else:
                same = same and torch.equal(out, expected)
    hf_tps = sorted(args.new_tokens / t for t in hf_s)
    ort_tps = sorted(args.new_tokens / t for t in ort_s)
    experts_mb = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n) * 4 / 2**20
    return {
        "experts": experts,
        "top_k": args.top_k,
        "expert_MB": round(experts_mb),
        "export_s": round(export_s, 1),
        "generate_tok/s": round(statistics.median(hf_tps), 1),
        "generate_spread": f"{hf_tps[0]:.1f}-{hf_tps[-1]:.1f}",
        "onnx_tok/s": round(statistics.median(ort_tps), 1),
        "onnx_spread": f"{ort_tps[0]:.1f}-{ort_tps[-1]:.1f}",
        "onnx/generate": round(statistics.median(ort_tps) / statistics.median(hf_tps), 2),
        "same_tokens": same,
        **{k: round(v, 2) for k, v in decode_shares(path, ids, args.new_tokens).items()},
    }


def main(argv: list[str] | None = None) -> pandas.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="2 layers, 8 tokens, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.new_tokens, args.repeat = 2, 8, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        rows = [bench(n, args, folder) for n in args.experts]
    df = pandas.DataFrame(rows).set_index("experts")
    with pandas.option_context("display.width", 200, "display.max_columns", 30):
        print(df.T.to_string())
    return df


if __name__ == "__main__":
    main()
