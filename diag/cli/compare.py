"""``diag compare``: the main job.

Runs ``model.generate`` (the reference), :func:`diag.generate` and
:func:`diag.onnx_generate` greedily on the same prompts, checks that they generate the
same tokens, prints a table (backend, duration, new tokens, tokens/s, parity, largest
logit difference to the reference), and writes it as a CSV with a bar plot (PNG) into
``--output``. When a backend diverges, it names the prompt, the first divergent step,
the top candidates of both sides there, with their logits, and whether it is a near tie
(:func:`diag.find_divergence` makes that verdict from the logits the generations kept).
With ``--num-beams N``, the beam searches of ``diag.generate`` and ``onnx_generate``
are compared step by step (:mod:`diag.diagnose.beams`: the step where their hypotheses
part, the candidates each ranked first with their scores on both sides, near tie or
not); ``model.generate``'s sequences are compared with ``diag.generate``'s.
The exit code is 1 when parity fails.

Example::

    python -m diag compare                       # SmolLM2, "def print_prime(n):", 100 tokens
    python -m diag compare --model tiny:llama --max-new-tokens 10 --output results/
    python -m diag compare --cache static --max-length 128   # the static cache export
    python -m diag compare --onnx genai-folder --model smollm2-135m-instruct   # another tool's file
    python -m diag compare --dtype bfloat16      # the export's fidelity, then bfloat16 vs float32

``--dtype`` (default ``auto``: the checkpoint's dtype, as transformers loads it) loads
the model in that dtype; the three backends run in the export's dtype, and a model in
float16 or bfloat16 gets a second verdict: its dtype against float32
(:mod:`diag.cli.dtype_effect`).

Every prompt runs alone (batch of 1, no padding), after one untimed warm-up call per
backend (session creation, first-call allocations).
"""

from __future__ import annotations

import argparse
import os

from diag.cli.args import (
    add_cache_arguments,
    add_chat_and_warmup_arguments,
    add_dtype_argument,
    add_max_new_tokens_argument,
    add_model_argument,
    add_prompt_argument,
    add_quantize_argument,
    check_cache_arguments,
    check_model_name,
    check_onnx_path,
    positive_int,
    prompts_of,
)
from diag.cli.records import add_record_arguments, apply_records, check_record_arguments

HELP = "compare model.generate, diag.generate and onnx_generate: parity and speed"
DESCRIPTION = (
    "Runs model.generate, diag.generate and diag.onnx_generate greedily on the same "
    "prompts, checks they generate the same tokens (names the first divergent step and "
    "the top candidates of both sides otherwise), prints a table and writes a CSV and a "
    "bar plot. Exit code 1 when parity fails. With no option: SmolLM2-135M-Instruct, "
    "one code prompt, 100 new tokens."
)

DEFAULT_PROMPTS = ["def print_prime(n):"]
REFERENCE = "hf"
ORDER = ("hf", "torch", "onnx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diag compare``."""
    add_model_argument(parser)
    add_prompt_argument(parser, default=DEFAULT_PROMPTS)
    add_max_new_tokens_argument(parser, 100)
    parser.add_argument(
        "--output",
        "-o",
        default=".",
        metavar="DIR",
        help="folder receiving the CSV and the PNG (default: the current folder)",
    )
    add_chat_and_warmup_arguments(
        parser, "untimed calls (2 tokens) per backend before the timed ones"
    )
    parser.add_argument(
        "--top",
        type=positive_int,
        default=5,
        metavar="K",
        help="candidates shown on each side of a divergence (default: 5)",
    )
    parser.add_argument(
        "--onnx",
        metavar="PATH",
        help="compare this ONNX model (a folder written by onnxruntime-genai's builder or "
        "transformers' exporter, or an .onnx file; see 'diag inspect') instead of diag's "
        "export of --model",
    )
    parser.add_argument(
        "--force-export",
        action="store_true",
        help="export again even when the export cache has the model",
    )
    parser.add_argument(
        "--num-beams",
        type=positive_int,
        default=1,
        metavar="N",
        help="compare beam searches of N hypotheses (the best sequence of each prompt) "
        "instead of greedy decoding (default: 1, greedy)",
    )
    add_dtype_argument(
        parser,
        "a bfloat16 model runs in float32 against its export (the CPU provider has no "
        "bfloat16 kernels) and float16/bfloat16 are then compared with float32",
    )
    add_record_arguments(parser)
    add_quantize_argument(parser)
    add_cache_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Runs ``diag compare``; returns the exit code (1 when parity fails)."""
    prompts = prompts_of(args)
    check_model_name(args.model)
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        args.parser.error(f"--output {args.output!r} is a file; give a folder")
    check_record_arguments(args)
    beams = args.num_beams > 1
    if beams and (getattr(args, "record", None) or getattr(args, "against", None)):
        args.parser.error(
            "--record and --against hold greedy generations: drop --num-beams to record, "
            "or drop the record options to compare beam searches"
        )
    if getattr(args, "onnx", None):
        check_onnx_path(args.parser, "--onnx", args.onnx)
    check_cache_arguments(args.parser, args)
    if getattr(args, "onnx", None) and args.cache == "static":
        args.parser.error(
            "--cache static chooses the layout of diag's export; --onnx compares a file "
            "already written: drop one of them"
        )

    import dataclasses

    from diag.cli.dtype_effect import compared_model, dtype_effect, dtype_header, dtype_lines
    from diag.cli.loading import encode_prompts, load_model
    from diag.cli.progress import progress
    from diag.cli.report import slug
    from diag.cli.runners import decoding_options, make_runner
    from diag.cli.tables import comparison_table, save_bar_plot, save_csv
    from diag.diagnose.sides import compare_results, narrowest_dtype
    from diag.export.plan.export_options import ExportOptions

    checkpoint, tokenizer = load_model(args.model, getattr(args, "dtype", "auto"))
    # like with like: the three backends in the export's dtype
    model = compared_model(checkpoint)
    options = decoding_options(
        model,
        tokenizer,
        args.max_new_tokens,
        do_sample=False,  # parity is checked on greedy decoding, whatever the model says
        num_beams=args.num_beams,
        # what the divergence report reads (a beam search: its scores too)
        output_logits=True,
        output_scores=beams,
    )
    export = ExportOptions(quantize=args.quantize, cache=args.cache, max_length=args.max_length)
    runners = {
        name: make_runner(name, model, force_export=args.force_export, export=export)
        for name in ORDER
    }
    if getattr(args, "onnx", None):
        from diag.generation import open_steps

        # another tool's file, its layout detected (diag.contract.detect)
        runners["onnx"].steps = open_steps(args.onnx)
    runners["onnx"].prepare()  # the export and its session, before any timing
    singles = [encode_prompts(tokenizer, [prompt], chat=args.chat) for prompt in prompts]

    warmup = dataclasses.replace(options, max_new_tokens=min(2, options.max_new_tokens))
    for name in progress(ORDER * args.warmup, desc="warm-up"):
        runners[name](*singles[0], warmup)

    # runs[name][i]: (GenerateResult, seconds) of backend `name` on prompt i
    runs: dict[str, list] = {name: [] for name in ORDER}
    jobs = [(i, name) for i in range(len(prompts)) for name in ORDER]
    for i, name in progress(jobs, desc="generating"):
        runs[name].append(runners[name](*singles[i], options))

    # the parity verdict is diagnose's, on the tokens and logits generated above; a beam
    # search is diagnosed between diag's two loops, which keep each step's decisions
    # (model.generate's are not kept: its sequences are compared with diag.generate's)
    dtype = narrowest_dtype(runners["torch"].steps, runners["onnx"].steps)
    divergences = []  # (prompt index, Divergence)
    diffs: dict[str, float] = {REFERENCE: 0.0}
    for name in ORDER:
        if name == REFERENCE:
            continue
        reference = "torch" if beams and name == "onnx" else REFERENCE
        largest: list[float | None] = []
        for i in range(len(prompts)):
            ref, gen = runs[reference][i][0], runs[name][i][0]
            div = compare_results(
                ref, gen, names=(reference, name), tokenizer=tokenizer,
                num_candidates=args.top, dtype=dtype,
            )  # fmt: skip
            if div:
                divergences.append((i, div))
            # after a divergence the prefixes differ: largest_diff stops at it
            largest.append(div.largest_diff)
        diffs[name] = float("nan") if None in largest else max(largest, default=0.0)

    decoding_name = f"beam search ({args.num_beams} beams)" if beams else "greedy"
    print(
        f"model: {args.model}, {len(prompts)} prompt(s), {decoding_name}, "
        f"max_new_tokens={args.max_new_tokens}"
    )
    print(f"dtype: {dtype_header(checkpoint, model)}")
    for i, prompt in enumerate(prompts):
        ref = runs[REFERENCE][i][0]
        text = ref.texts(tokenizer)[0]
        print(f"----- prompt {i + 1} ({REFERENCE}, {ref.num_generated_tokens[0]} new tokens) -----")
        print(f"{prompt}\n>>> {text}" if args.chat else f"{prompt}{text}")
    print("-----")
    for i, div in divergences:
        print(f"{div.other} diverges from {div.reference} on prompt {i + 1}: {div}")
    effects = dtype_effect(
        checkpoint, model, runs[REFERENCE], singles, options, tokenizer, args.top
    )
    if effects:
        print("\n".join(dtype_lines(checkpoint, effects)))

    failed = {div.other for _, div in divergences}
    from diag.cli.runners import BACKEND_LABELS

    # the inputs every backend ran with, as a record states them (each prompt alone:
    # no padding)
    prompt_ids = [ids[0].tolist() for ids, _ in singles]
    decoding = {
        "max_new_tokens": options.max_new_tokens,
        "eos_token_id": options.eos_token_ids,
        "pad_token_id": options.pad_token_id,
        "do_sample": False,
    }
    results = {name: [result for result, _ in runs[name]] for name in ORDER}
    record_failed = apply_records(
        args, model, tokenizer, prompt_ids, decoding, results, BACKEND_LABELS
    )
    table = comparison_table(
        runs, reference=REFERENCE, failed=failed, max_logit_diffs=diffs, order=ORDER
    )
    import pandas

    with pandas.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))

    base = os.path.join(output, f"diag_compare_{slug(args.model)}")
    title = (
        f"{args.model}: {len(prompts)} prompt(s), {decoding_name}, "
        f"max_new_tokens={args.max_new_tokens}"
    )
    csv_path = save_csv(table, base + ".csv")
    png_path = save_bar_plot(table, base + ".png", title=title)
    print(f"wrote {csv_path}")
    print(f"wrote {png_path}")
    if failed:
        print(f"parity FAILED for {', '.join(sorted(failed))}")
        return 1
    if record_failed:
        print(f"record check FAILED against {args.against}")
        return 1
    print("parity OK: all backends generated the same tokens")
    return 0
