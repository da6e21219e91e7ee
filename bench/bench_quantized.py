"""Quantized exports of SmolLM2 side by side, in one run: diag float32 / int8 / int4 and
onnxruntime-genai's int4 build.

For each contender: the weight bytes (the files), the export time (diag: the float
export, from its sidecar, plus the quantization; genai: its model builder, timed
here), the prefill time and the decode throughput at batch 1 and 8 (greedy,
``--new-tokens`` tokens, eos ignored; diag through :func:`diag.onnx_generate` with a
session made beforehand, genai through its own ``Generator``), and what
:func:`diag.quantization_report` says against float32 torch: top-1 agreement and mean
KL teacher-forced on 5 code and chat prompts (``--tf-tokens`` steps each), and the
first free-running divergence.

The speed rounds alternate the contenders ``--repeat`` times; the table shows the
median and the spread (max - min) / median. The int4 bandwidth bound: a batch-1 decode
step reads every weight once (an embedding table only read by a lookup: one row), so
it cannot beat ``bandwidth / bytes read per token``; the bandwidth is
:func:`diag.helpers.bandwidth.measure_bandwidth` (a sum over a buffer much larger than the caches),
measured between the rounds.

Then the settings table (teacher-forced only, same prompts): block size 32 / 64 / 128,
symmetric or not, accuracy_level, the lm_head in int8 or float, the tied embedding
sharing the lm_head's table, int8 for all; each with its decode speed at batch 1
(alternated with genai's int4 in the same rounds: the ratio is of the same moments)
and its weight MiB: which setting reaches a top-1 agreement of 0.95, and at what speed.
The default int4 and int8 rows are the contenders' of the first table.

Usage::

    python bench/bench_quantized.py            # the full run (~15 min on 2 busy cores)
    python bench/bench_quantized.py --quick    # 2 prompts, 20 steps, 1 repeat: a smoke check

genai's folder is read by diag as it is (:mod:`diag.contract.detect` knows its
layout): the report runs on the very files genai's ``Generator`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prompts import PROMPTS  # noqa: E402

import diag  # noqa: E402
from diag.export import QuantizeOptions, export_causal_lm  # noqa: E402
from diag.export.plan.export_key import cache_dir  # noqa: E402
from diag.export.record.export_cache import read_sidecar  # noqa: E402
from diag.generation import onnx_generate, open_steps  # noqa: E402
from diag.helpers.bandwidth import measure_bandwidth  # noqa: E402
from diag.helpers.torch_helper import single_torch_thread  # noqa: E402
from diag.ort import make_session  # noqa: E402
from diag.ort.session import physical_cores  # noqa: E402

CODE = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain what this does: `sorted(d.items(), key=lambda kv: kv[1], reverse=True)`",
    "Write a SQL query that returns the ten customers with the largest total order amount.",
]
CHAT = [
    "What are three good habits for staying healthy while working from home?",
    "Tell me a short story about a lighthouse keeper and a storm.",
]
#: the settings table: (label, options); None: the row of that contender of the first
#: table (the default int4 and int8 exports)
SETTINGS = [
    ("int4 b32 sym acc4 (default)", None),
    ("int4 b64 sym acc4", QuantizeOptions(block_size=64)),
    ("int4 b128 sym acc4", QuantizeOptions(block_size=128)),
    ("int4 b32 asym acc4", QuantizeOptions(symmetric=False)),
    ("int4 b32 sym acc0 (fp32 compute)", QuantizeOptions(accuracy_level=None)),
    ("int4 b32 lm_head int8", QuantizeOptions(lm_head_bits=8)),
    ("int4 b32 lm_head float", QuantizeOptions(lm_head=False)),
    ("int4 b32 tied embedding shared", QuantizeOptions(embedding=True)),
    ("int8 all b32 acc4", None),
]
DEFAULTS = {"int4 b32 sym acc4 (default)": "diag int4", "int8 all b32 acc4": "diag int8"}


def onnx_file(path: str) -> str:
    """The ``.onnx`` file of a contender (genai's: ``model.onnx`` of its folder)."""
    return os.path.join(path, "model.onnx") if os.path.isdir(path) else path


def file_bytes(path: str) -> int:
    path = onnx_file(path)
    folder, base = os.path.dirname(path), os.path.basename(path)
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder) if n in (base, base + ".data"))


def bytes_per_token(path: str) -> int:
    """Initializer bytes a batch-1 decode step reads: all, except a table only read by
    lookups (``Gather`` / ``GatherBlockQuantized`` data), of which one row."""
    import onnx

    proto = onnx.load(onnx_file(path), load_external_data=False)
    readers: dict[str, list[tuple[str, int]]] = {}
    for node in proto.graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node.op_type, k))
    total = 0
    for init in proto.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        size = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            nbytes = (n + 1) // 2
        else:
            nbytes = n * size
        uses = readers.get(init.name, [])
        if uses and all(op.startswith("Gather") and k == 0 for op, k in uses) and init.dims:
            nbytes //= init.dims[0]
        total += nbytes
    return total


def genai_build(hf_folder: str, out: str, precision: str = "int4") -> float:
    """Builds genai's ``precision`` (int4, fp32) CPU model into ``out`` (once); returns
    the build seconds (0 when reused)."""
    if os.path.exists(os.path.join(out, "genai_config.json")):
        return 0.0
    begin = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf_folder, "-o", out,
         "-p", precision, "-e", "cpu", "-c", out + ".cache"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - begin


class DiagRunner:
    def __init__(self, path: str, model: Any, tokenizer: Any, threads: int, spinning: bool | None = None) -> None:
        session = make_session(path, intra_op_num_threads=threads, allow_spinning=spinning)
        self.spinning = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        self.backend = open_steps(session).backend
        self.model, self.tokenizer = model, tokenizer

    def run(self, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> tuple[float, float]:
        res = onnx_generate(
            self.backend, ids, mask, max_new_tokens=new_tokens, eos_token_id=[],
            do_sample=False, pad_token_id=self.tokenizer.pad_token_id, return_result=True,
        )  # fmt: skip
        return res.prefill_seconds, res.decode_seconds


class GenaiRunner:
    def __init__(self, folder: str) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(folder)

    def run(self, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> tuple[float, float]:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(
            max_length=ids.shape[1] + new_tokens, do_sample=False, batch_size=ids.shape[0]
        )
        gen = og.Generator(self.model, params)
        begin = time.perf_counter()
        gen.append_tokens(ids.numpy().astype(np.int32))
        gen.generate_next_token()
        first = time.perf_counter()
        for _ in range(new_tokens - 1):
            gen.generate_next_token()
        return first - begin, time.perf_counter() - first


def chat_ids(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    return list(ids)


def speed(runners: dict[str, Any], tokenizer: Any, batches, new_tokens, repeat) -> list[dict]:
    rows, bandwidths = [], []
    for batch in batches:
        enc = tokenizer(PROMPTS[:batch], return_tensors="pt", padding=True, padding_side="left")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        for runner in runners.values():  # warm-up
            runner.run(ids, mask, 4)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
        for _ in range(repeat):
            for name, runner in runners.items():  # alternated
                times[name].append(runner.run(ids, mask, new_tokens))
            bandwidths.append(measure_bandwidth() * 1e9)  # bytes/s, between the rounds
        for name, values in times.items():
            prefill = [v[0] for v in values]
            decode = [batch * (new_tokens - 1) / v[1] for v in values]
            rows.append({
                "contender": name, "batch": batch,
                "prefill_ms": 1e3 * statistics.median(prefill),
                "decode_tok/s": statistics.median(decode),
                "decode_spread": (max(decode) - min(decode)) / statistics.median(decode),
            })  # fmt: skip
    return rows, statistics.median(bandwidths)


def settings_table(model, tokenizer, prompts, args, df, genai_folder, threads) -> pandas.DataFrame:
    """:data:`SETTINGS`: top-1, mean KL (teacher-forced), decode tokens/s at batch 1
    alternated with genai's int4, MiB; the default rows read from ``df``."""
    first = df.set_index("contender")
    genai = GenaiRunner(genai_folder)
    rows = []
    for label, options in SETTINGS:
        if options is None:
            row = first.loc[DEFAULTS[label]]
            rows.append({
                "setting": label, "name": QuantizeOptions.parse(DEFAULTS[label][-4:]).name,
                "top1": row["top1"], "mean KL": row["mean KL"],
                "decode tok/s b1": row["decode tok/s b1"],
                "x genai": row["decode tok/s b1"] / first.loc["genai int4", "decode tok/s b1"],
                "weight MiB": row["weight MiB"],
            })  # fmt: skip
            continue
        result = export_causal_lm(model, quantize=options, verify=False)
        with single_torch_thread():
            rep = diag.quantization_report(
                model, result, prompts, tokenizer=tokenizer, max_new_tokens=args.tf_tokens,
                free_running=0, text=None,
            )  # fmt: skip
        runners = {label: DiagRunner(result.filename, model, tokenizer, threads), "genai int4": genai}
        sp = pandas.DataFrame(speed(runners, tokenizer, [1], args.new_tokens, args.repeat)[0]).set_index("contender")
        tok_s = sp.loc[label, "decode_tok/s"]
        print(f"[setting {label}: top-1 {rep.summary['top1_agreement']:.3f}, {tok_s:.1f} tok/s]", flush=True)
        rows.append({
            "setting": label, "name": options.name,
            "top1": rep.summary["top1_agreement"], "mean KL": rep.summary["mean_kl"],
            "decode tok/s b1": tok_s, "x genai": tok_s / sp.loc["genai int4", "decode_tok/s"],
            "weight MiB": file_bytes(result.filename) / 2**20,
        })  # fmt: skip
    table = pandas.DataFrame(rows)
    reach = table[table.top1 >= 0.95]
    print(f"\nsettings (teacher-forced, {len(prompts)} prompts x {args.tf_tokens} steps; decode batch 1, "
          f"median of {args.repeat} rounds alternated with genai int4, x genai: the same rounds)")  # fmt: skip
    print("reaches top-1 >= 0.95: " + (
        ", ".join(f"{r.setting} ({r['decode tok/s b1']:.0f} tok/s, {r['x genai']:.2f}x genai)" for _, r in reach.iterrows())
        if len(reach) else "none of these"))  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> pandas.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 prompts, 20 steps, 1 repeat")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--tf-tokens", type=int, default=100)
    parser.add_argument("--free-running", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="the speed rounds only (no report)")
    parser.add_argument("--genai-fp32", action="store_true", help="genai's float32 build as well")
    parser.add_argument("--spinning", choices=["auto", "on", "off"], default="auto",
                        help="diag's intra-op threads spinning (genai's always spin); auto: "
                        "diag.ort.make_session decides from the load")  # fmt: skip
    args = parser.parse_args(argv)
    prompts_text = CODE + CHAT
    if args.quick:
        args.new_tokens, args.tf_tokens, args.free_running, args.repeat = 16, 20, 10, 1
        prompts_text = [CODE[0], CHAT[0]]
    threads = physical_cores()
    torch.set_num_threads(threads)

    model, tokenizer = diag.load_pretrained("smollm2-135m-instruct")
    model = model.eval()
    prompts = [chat_ids(tokenizer, p) for p in prompts_text]
    hf_folder = model.config._name_or_path
    if not os.path.isdir(hf_folder):
        hf_folder = os.path.join(cache_dir(), "models", "smollm2-135m-instruct")

    paths, export_s = {}, {}
    for name, quantize in (("diag float32", None), ("diag int8", "int8"), ("diag int4", "int4")):
        result = export_causal_lm(model, quantize=quantize)
        paths[name] = result.filename
        side = read_sidecar(result.filename)
        float_side = read_sidecar(result.source) if result.source else side
        export_s[name] = float_side["timings"]["total"] + side["timings"].get("quantize", 0.0)
    genai_folder = os.path.join(cache_dir(), "genai", "smollm2-135m-instruct-int4-cpu")
    build = genai_build(hf_folder, genai_folder)
    genai_time_file = os.path.join(genai_folder, "build_seconds.txt")
    if build:
        with open(genai_time_file, "w") as f:
            f.write(str(build))
    export_s["genai int4"] = float(open(genai_time_file).read()) if os.path.exists(genai_time_file) else float("nan")
    paths["genai int4"] = genai_folder  # its own folder, as genai's Generator reads it
    if args.genai_fp32:
        folder = os.path.join(cache_dir(), "genai", "smollm2-135m-instruct-fp32-cpu")
        export_s["genai fp32"] = genai_build(hf_folder, folder, "fp32") or float("nan")
        paths["genai fp32"] = folder

    spinning = {"auto": None, "on": True, "off": False}[args.spinning]
    runners = {name: DiagRunner(p, model, tokenizer, threads, spinning) for name, p in paths.items() if name.startswith("diag")}
    for name, p in paths.items():
        if name.startswith("genai"):
            runners[name] = GenaiRunner(p)
    print(f"[exports ready: {export_s}; diag's threads spin: "
          f"{next(iter(runners.values())).spinning}, load {os.getloadavg()[0]:.1f}]", flush=True)  # fmt: skip
    rows, bandwidth = speed(runners, tokenizer, [1, 8], args.new_tokens, args.repeat)
    sp = pandas.DataFrame(rows)
    print(sp.to_string(index=False, float_format=lambda v: f"{v:.3g}"), flush=True)
    for batch in (1, 8):
        rate = sp[sp.batch == batch].set_index("contender")["decode_tok/s"]
        print(f"batch {batch}, x genai int4: " + ", ".join(
            f"{n} {rate[n] / rate['genai int4']:.2f}x" for n in rate.index if n != "genai int4"), flush=True)  # fmt: skip
    print(f"[load after the rounds {os.getloadavg()[0]:.1f}]", flush=True)
    del runners
    if args.speed_only:
        return sp

    quality = {}
    for name, path in paths.items():
        begin = time.perf_counter()
        # one torch thread: its workers would spin against ONNX Runtime's on 2 cores
        with single_torch_thread():
            rep = diag.quantization_report(
                model, path, prompts, tokenizer=tokenizer, max_new_tokens=args.tf_tokens,
                free_running=args.free_running,
            )  # fmt: skip
        quality[name] = rep
        print(f"[report {name}: {time.perf_counter() - begin:.0f}s] {rep.summary}", flush=True)

    table = []
    for name, path in paths.items():
        s = quality[name].summary

        def get(batch, col, name=name):
            return float(sp[(sp.contender == name) & (sp.batch == batch)][col].iloc[0])

        table.append({
            "contender": name,
            "weight MiB": file_bytes(path) / 2**20,
            "read/token MiB": bytes_per_token(path) / 2**20,
            "export s": export_s[name],
            "prefill ms b1": get(1, "prefill_ms"),
            "decode tok/s b1": get(1, "decode_tok/s"),
            "spread b1": get(1, "decode_spread"),
            "prefill ms b8": get(8, "prefill_ms"),
            "decode tok/s b8": get(8, "decode_tok/s"),
            "spread b8": get(8, "decode_spread"),
            "top1": s["top1_agreement"],
            "mean KL": s["mean_kl"],
            "worst KL": s["worst_kl"],
            "top5": s["top5_overlap"],
            "ppl": s["perplexity_onnx"],
            "1st div": s["first_divergent_step"],
        })  # fmt: skip
    df = pandas.DataFrame(table)
    pandas.set_option("display.width", 250)
    pandas.set_option("display.max_columns", 30)
    print(f"\nSmolLM2-135M-Instruct, {threads} threads, {args.new_tokens} new tokens, "
          f"{args.repeat} alternated rounds (median; spread = (max-min)/median); report: "
          f"{len(prompts)} code/chat prompts x {args.tf_tokens} teacher-forced steps, "
          f"{args.free_running} free-running; torch float32 perplexity "
          f"{quality['diag float32'].summary['perplexity_torch']:.4g}")  # fmt: skip
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    int4 = df.set_index("contender")
    bound = bandwidth / bytes_per_token(paths["diag int4"])
    print(f"\nmemory bandwidth (diag.helpers.bandwidth.measure_bandwidth) {bandwidth / 1e9:.1f} GB/s; int4 bound (batch 1): "
          f"{bytes_per_token(paths['diag int4']) / 2**20:.0f} MiB/token -> {bound:.0f} tokens/s; "
          f"diag int4 reaches {int4.loc['diag int4', 'decode tok/s b1'] / bound:.0%} of it")  # fmt: skip
    ratio = int4.loc["diag int4", "decode tok/s b1"] / int4.loc["genai int4", "decode tok/s b1"]
    print(f"diag int4 / genai int4 decode batch 1: {ratio:.2f}x (target >= 1.2x), batch 8: "
          f"{int4.loc['diag int4', 'decode tok/s b8'] / int4.loc['genai int4', 'decode tok/s b8']:.2f}x; "
          f"top-1 agreement {int4.loc['diag int4', 'top1']:.3f} vs {int4.loc['genai int4', 'top1']:.3f}")  # fmt: skip
    print("\nfirst divergence of diag int4, prompt 0:\n" + str(quality["diag int4"].divergences[0]))

    if not args.no_sweep:
        print("\n" + settings_table(model, tokenizer, prompts, args, df, genai_folder, threads).to_string(
            index=False, float_format=lambda v: f"{v:.3g}"))  # fmt: skip
    return df


if __name__ == "__main__":
    main()
