"""The fused graph of every zoo architecture and of SmolLM2, written down to compare.

For each model it runs :func:`diag.export_causal_lm` (opset 23, fusions on, validated
against torch) and records the fusion counts, the op-type histogram of the saved ONNX
graph, a histogram of node signatures (op type, attributes, number of inputs and
outputs) and the shapes of the initializers. ``--save`` writes them to a JSON file;
``--against`` compares a run with such a file and exits with 1 on any difference. It
checks a change of the fusions (``diag.export.make.rewrite``) against the graphs of the
commit before it: the file depends on the transformers release, so it is not a test.

Usage::

    python bench/fusion_graphs.py --save /tmp/before.json
    python bench/fusion_graphs.py --against /tmp/before.json
    python bench/fusion_graphs.py --models llama,gpt2 --no-smollm2 --against /tmp/before.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import onnx

# run from a checkout without installing the package
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TINY = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gpt2", "falcon"]
TINY += ["deepseek_v3", "gpt_neox"]


def _attr(attr: onnx.AttributeProto) -> str:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float):
        value = float(f"{value:.6g}")
    return f"{attr.name}={value}"


def describe(filename: str) -> dict:
    """Histograms of the graph in ``filename`` (the weights are not loaded)."""
    proto = onnx.load(filename, load_external_data=False)
    ops = collections.Counter()
    signatures = collections.Counter()
    for node in proto.graph.node:
        op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
        ops[op] += 1
        attrs = ",".join(sorted(_attr(a) for a in node.attribute))
        signatures[f"{op}({len(node.input)}->{len(node.output)}) {attrs}"] += 1
    inits = collections.Counter(
        f"{onnx.TensorProto.DataType.Name(t.data_type)}{list(t.dims)}"
        for t in proto.graph.initializer
    )
    return {
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items())),
        "signatures": dict(sorted(signatures.items())),
        "initializers": dict(sorted(inits.items())),
    }


def run_one(name: str, model, folder: str) -> dict:
    from diag.export import export_causal_lm

    filename = os.path.join(folder, name, "model.onnx")
    begin = time.perf_counter()
    result = export_causal_lm(model, filename, verify=True, force=True)
    wall = time.perf_counter() - begin
    info = describe(filename)
    info["fusions"] = dict(result.fusions)
    info["max_abs"] = result.validation.max_abs if result.validation is not None else None
    info["optimize_s"] = round(result.timings.optimize, 2)
    info["export_s"] = round(wall, 2)
    return info


def _diff(name: str, before: dict, after: dict) -> list[str]:
    problems = []
    for key in ("fusions", "ops", "signatures", "initializers"):
        old, new = before.get(key, {}), after.get(key, {})
        for item in sorted(set(old) | set(new)):
            if old.get(item) != new.get(item):
                problems.append(f"{name}: {key} {item!r}: {old.get(item)} -> {new.get(item)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(TINY), help="zoo architectures")
    parser.add_argument("--no-smollm2", action="store_true", help="tiny models only")
    parser.add_argument("--save", default=None, help="writes the records to this JSON file")
    parser.add_argument("--against", default=None, help="compares with this JSON file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from diag.models import get_untrained_model_with_inputs, load_pretrained

    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.models.split(",") if n]:
            model = get_untrained_model_with_inputs(name)["model"].eval()
            records[name] = run_one(name, model, tmp)
            print(name, records[name]["fusions"], records[name]["nodes"], "nodes", flush=True)
        if not args.no_smollm2:
            model, _ = load_pretrained("smollm2-135m-instruct", progress=False)
            records["smollm2"] = run_one("smollm2", model.eval(), tmp)
            r = records["smollm2"]
            print("smollm2", r["fusions"], r["nodes"], "nodes", r["export_s"], "s", flush=True)
    if args.save:
        from diag.helpers.atomic_write import write_text_atomically

        write_text_atomically(args.save, json.dumps(records, indent=1, sort_keys=True))
    if not args.against:
        return 0
    with open(args.against) as f:
        reference = json.load(f)
    problems = []
    for name, after in records.items():
        if name not in reference:
            problems.append(f"{name}: not in {args.against}")
            continue
        problems.extend(_diff(name, reference[name], after))
        print(
            f"{name}: export {reference[name]['export_s']}s -> {after['export_s']}s, "
            f"optimize {reference[name]['optimize_s']}s -> {after['optimize_s']}s"
        )
    print("\n".join(problems) or "same graphs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
