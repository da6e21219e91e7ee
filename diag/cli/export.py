"""``diag export``: exports a model to ONNX and prints the validation report.

Example::

    python -m diag export --model tiny:llama --output exported/
    python -m diag export --model tiny:llama --output static/ --cache static --max-length 256
    python -m diag export --model tiny:llama --output half/ --dtype float16

The folder receives ``model.onnx`` (with its external weights when the model is large)
and the tokenizer, so that it holds all a runtime needs. With ``--verify`` (the default)
the exported model runs next to the torch model on a prefill and a decode step, and the
report gives the largest difference of every output; the exit code is 1 when it fails.
``--dtype`` loads the model in a dtype and exports it in that dtype (``auto``, the
default: the checkpoint's, a bfloat16 one exported as float32 for ONNX Runtime's CPU
provider, :mod:`diag.export.plan.dtype`; an explicit ``bfloat16`` file is for CUDA and
is not validated on the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys

from diag.cli.args import (
    add_cache_arguments,
    add_dtype_argument,
    add_model_argument,
    add_quantize_argument,
    check_cache_arguments,
    check_model_name,
)

HELP = "export a model to ONNX and print the validation report"
DESCRIPTION = (
    "Exports a causal LM to ONNX (the diag export contract: input_ids, attention_mask, "
    "position_ids and the past key/values in, logits and the present key/values out), "
    "checks it against the torch model and prints the largest difference of every "
    "output with PASS or FAIL."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diag export``."""
    add_model_argument(parser)
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="folder receiving model.onnx and the tokenizer (created when missing)",
    )
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the exported model next to the torch model and compare (default: --verify)",
    )
    parser.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rewrite RMSNorm, rotary, attention and projections into the ONNX ops made "
        "for them (default: --fuse; --no-fuse keeps the exporter's graph)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default: 23, the first with Attention, RMSNormalization and "
        "RotaryEmbedding)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="export again even when the folder already holds an export of this model",
    )
    add_dtype_argument(
        parser,
        "the file is in that dtype (auto: the model's, a bfloat16 one as float32: the CPU "
        "provider has no bfloat16 kernels; bfloat16: a file for CUDA, not validated here)",
    )
    add_quantize_argument(parser)
    add_cache_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Runs ``diag export``; returns the exit code (1 when the validation fails)."""
    output = os.path.abspath(args.output)
    check_model_name(args.model)
    check_cache_arguments(args.parser, args)
    if os.path.exists(output) and not os.path.isdir(output):
        args.parser.error(f"--output {args.output!r} is a file; give a folder")

    # imported here: `--help` and the argument checks answer before torch is loaded
    from diag.cli.exported_model import export_model
    from diag.cli.loading import load_model
    from diag.contract.inspection import inspect_onnx
    from diag.export.plan.export_options import ExportOptions

    model, tokenizer = load_model(args.model, args.dtype)
    os.makedirs(output, exist_ok=True)
    filename = os.path.join(output, "model.onnx")
    if args.opset is not None and not 18 <= args.opset <= 23:
        args.parser.error(f"--opset {args.opset}: diag exports with opsets 18 to 23")
    options = ExportOptions(
        fuse=args.fuse,
        opset=args.opset,
        quantize=args.quantize,
        cache=args.cache,
        max_length=args.max_length,
        dtype=None if args.dtype == "auto" else args.dtype,
    )
    exported = export_model(
        model, filename=filename, verify=args.verify, force=args.force, options=options
    )
    # what a runtime needs next to the graph: the tokenizer and the decoding defaults
    tokenizer.save_pretrained(output)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(output)

    print(f"model: {args.model}")
    # the file's own word (its metadata): a bfloat16 model may have become float32
    print(f"dtype: {', '.join(inspect_onnx(exported.path).dtypes.values())}")
    if exported.cached:
        print(
            "reused the export already in the folder (same model and versions; --force exports again)"
        )
    for path in exported.files():
        print(f"  {path} ({_size(os.path.getsize(path))})")
    print(f"tokenizer and generation config saved in {output}")
    if not args.verify:
        print("validation: skipped (--no-verify)")
        return 0
    print(exported.format_report())
    if exported.failure is None and exported.validation is None:
        # a file the CPU provider cannot run (bfloat16): the export said why, on stderr
        return 0
    if not exported.passed:
        sys.stderr.write("diag: error: the exported model differs from torch beyond tolerance\n")
        return 1
    return 0


def _size(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
