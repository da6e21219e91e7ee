"""``diag inspect PATH``: what an ONNX decoder is and whether diag can drive it
(:func:`diag.inspect_onnx`).

Example::

    python -m diag inspect genai-folder
    python -m diag inspect model.onnx --head-dim 64

The exit code is 0 when diag can drive the model, 1 when it cannot (the report says
why, one line per kind of problem).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

HELP = (
    "print the layout, the operators and the weights of an ONNX decoder, and whether diag drives it"
)
DESCRIPTION = (
    "Reads an ONNX decoder (a folder written by onnxruntime-genai's builder or by "
    "transformers' exporter, or an .onnx file) without running it and prints the layout "
    "found, the attention operator, the quantized matrix products (bits, block size), "
    "the weight bytes, and why diag cannot drive it if it cannot."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model path and the layout fields a user may override."""
    parser.add_argument("path", help="a folder or an .onnx file")
    parser.add_argument(
        "--kv-heads", type=int, help="key/value heads, when the graph leaves them symbolic"
    )
    parser.add_argument("--head-dim", type=int, help="head size, when the graph leaves it symbolic")


def layout_overrides(args: argparse.Namespace) -> dict[str, int] | None:
    """The ``layout=`` fields given on the command line, None when none is."""
    fields = {
        name: value
        for name, value in (("kv_heads", args.kv_heads), ("head_dim", args.head_dim))
        if value is not None
    }
    return fields or None


def cpu_line(report: Any) -> str:
    """Whether ONNX Runtime's CPU provider has a kernel for every node of the inspected
    graphs (:mod:`diag.ort.provider_support`)."""
    from diag.contract.detect import find_model
    from diag.ort.provider_support import CPU, support_message, unsupported_nodes

    for path in find_model(report.path).paths:
        unsupported = unsupported_nodes(path, CPU)
        if unsupported:
            return f"{CPU}: no. " + support_message(unsupported, CPU, os.path.basename(path))
    return f"{CPU}: yes"


def run(args: argparse.Namespace) -> int:
    """Prints the inspection; 0 when the model can be driven, else 1."""
    from diag.contract.inspection import inspect_onnx

    report = inspect_onnx(args.path, layout_overrides(args))
    sys.stdout.write(str(report) + "\n")
    if report.layout is not None:
        sys.stdout.write(cpu_line(report) + "\n")
    return 0 if report.drivable else 1
