"""``diag export``: exports a model to ONNX and prints the validation report.

Example::

    python -m diag export --model tiny:llama --output exported/

The folder receives ``model.onnx`` (with its external weights when the model is large)
and the tokenizer, so that it holds all a runtime needs. With ``--verify`` (the default)
the exported model runs next to the torch model on a prefill and a decode step, and the
report gives the largest difference of every output; the exit code is 1 when it fails.
"""

from __future__ import annotations

import argparse
import os

from diag.cli.args import add_model_argument

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
        "--force",
        action="store_true",
        help="export again even when the folder already holds an export of this model",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``diag export``; returns the exit code (1 when the validation fails)."""
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        args.parser.error(f"--output {args.output!r} is a file; give a folder")

    from diag.cli.exporting import export_model
    from diag.cli.loading import load_model

    model, tokenizer = load_model(args.model)
    os.makedirs(output, exist_ok=True)
    filename = os.path.join(output, "model.onnx")
    exported = export_model(model, filename=filename, verify=args.verify, force=args.force)
    tokenizer.save_pretrained(output)

    print(f"model: {args.model}")
    print(f"wrote {exported.path}")
    for extra in exported.extra_files:
        print(f"wrote {extra}")
    print(f"tokenizer saved in {output}")
    if not args.verify:
        print("validation skipped (--no-verify)")
        return 0
    print(exported.format_report())
    return 0 if exported.passed else 1
