"""``diag compare``: the main job.

Runs ``model.generate`` (the reference), :func:`diag.generate` and
:func:`diag.onnx_generate` greedily on the same prompts, checks that they generate the
same tokens, prints a table (backend, duration, new tokens, tokens/s, parity, largest
logit difference to the reference), and writes it as a CSV with a bar plot (PNG) into
``--output``. When a backend diverges, it names the prompt, the first divergent step,
the top candidates of both sides there, with their logits, and whether it is a near tie
(:func:`diag.find_divergence` makes that verdict from the logits the generations kept).
The exit code is 1 when parity fails.

Example::

    python -m diag compare                       # SmolLM2, "def print_prime(n):", 100 tokens
    python -m diag compare --model tiny:llama --max-new-tokens 10 --output results/

Every prompt runs alone (batch of 1, no padding), after one untimed warm-up call per
backend (session creation, first-call allocations).
"""

from __future__ import annotations

import argparse
import os

from diag.cli.args import (
    add_chat_and_warmup_arguments,
    add_max_new_tokens_argument,
    add_model_argument,
    add_prompt_argument,
    add_quantize_argument,
    check_model_name,
    positive_int,
    prompts_of,
)

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
        "--force-export",
        action="store_true",
        help="export again even when the export cache has the model",
    )
    add_quantize_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Runs ``diag compare``; returns the exit code (1 when parity fails)."""
    prompts = prompts_of(args)
    check_model_name(args.model)
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        args.parser.error(f"--output {args.output!r} is a file; give a folder")

    import dataclasses

    from diag.cli.backends import DecodingArgs, make_runner
    from diag.cli.loading import encode_prompts, eos_token_ids, load_model, progress
    from diag.cli.report import slug
    from diag.cli.tables import comparison_table, save_bar_plot, save_csv
    from diag.diagnose.divergence import find_divergence

    model, tokenizer = load_model(args.model)
    options = DecodingArgs(
        max_new_tokens=args.max_new_tokens,
        eos_token_id=eos_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,  # parity is checked on greedy decoding, whatever the model says
    )
    runners = {
        name: make_runner(name, model, force_export=args.force_export, quantize=args.quantize)
        for name in ORDER
    }
    runners["onnx"].export()
    encoded = encode_prompts(tokenizer, prompts, chat=args.chat)
    singles = [encoded.select(i) for i in range(len(prompts))]

    warmup = dataclasses.replace(options, max_new_tokens=min(2, options.max_new_tokens))
    for name in progress(ORDER * args.warmup, desc="warm-up"):
        runners[name](singles[0].input_ids, singles[0].attention_mask, warmup)

    # generations[name][i]: backend `name` on prompt i
    generations: dict[str, list] = {name: [] for name in ORDER}
    jobs = [(i, name) for i in range(len(prompts)) for name in ORDER]
    for i, name in progress(jobs, desc="generating"):
        batch = singles[i]
        generations[name].append(
            runners[name](batch.input_ids, batch.attention_mask, options, output_logits=True)
        )

    # the parity verdict is diagnose's, on the tokens and logits generated above
    divergences = []  # (prompt index, Divergence)
    diffs: dict[str, float] = {REFERENCE: 0.0}
    for name in ORDER:
        if name == REFERENCE:
            continue
        largest: list[float | None] = []
        for i in range(len(prompts)):
            ref, gen = generations[REFERENCE][i], generations[name][i]
            div = find_divergence(
                ref.new_tokens,
                gen.new_tokens,
                ref.step_logits,
                gen.step_logits,
                names=(REFERENCE, name),
                tokenizer=tokenizer,
                num_candidates=args.top,
            )
            if div:
                divergences.append((i, div))
            # after a divergence the prefixes differ: largest_diff stops at it
            largest.append(div.largest_diff)
        diffs[name] = float("nan") if None in largest else max(largest, default=0.0)

    print(
        f"model: {args.model}, {len(prompts)} prompt(s), greedy, max_new_tokens={args.max_new_tokens}"
    )
    for i, prompt in enumerate(prompts):
        ref = generations[REFERENCE][i]
        text = tokenizer.decode(ref.new_tokens[0], skip_special_tokens=True)
        print(f"----- prompt {i + 1} ({REFERENCE}, {len(ref.new_tokens[0])} new tokens) -----")
        print(f"{prompt}\n>>> {text}" if args.chat else f"{prompt}{text}")
    print("-----")
    for i, div in divergences:
        print(f"{div.other} diverges from {div.reference} on prompt {i + 1}: {div}")

    failed = {div.other for _, div in divergences}
    table = comparison_table(
        generations, reference=REFERENCE, failed=failed, max_logit_diffs=diffs, order=ORDER
    )
    import pandas

    with pandas.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))

    base = os.path.join(output, f"diag_compare_{slug(args.model)}")
    title = f"{args.model}: {len(prompts)} prompt(s), greedy, max_new_tokens={args.max_new_tokens}"
    csv_path = save_csv(table, base + ".csv")
    png_path = save_bar_plot(table, base + ".png", title=title)
    print(f"wrote {csv_path}")
    print(f"wrote {png_path}")
    if failed:
        print(f"parity FAILED for {', '.join(sorted(failed))}")
        return 1
    print("parity OK: all backends generated the same tokens")
    return 0
