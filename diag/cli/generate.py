"""``diag generate``: generates text with one backend and prints the latency report.

Example::

    python -m diag generate --model tiny:llama --prompt "def f(x):" --prompt "Hello" \\
        --backend onnx --max-new-tokens 20
    python -m diag generate --model tiny:llama --prompt "Hello" --dtype float16

The prompts are tokenized into one left-padded batch; the report counts the tokenizer
(encode), the generation call and the detokenizer (decode) apart, after an untimed
warm-up call (``--warmup``) that pays the one-off costs (session creation, first-call
allocations). ``--dtype`` loads the model in a dtype (default ``auto``: the
checkpoint's); ``--backend onnx`` runs its export (a bfloat16 model exported as float32:
ONNX Runtime's CPU provider has no bfloat16 kernels).
"""

from __future__ import annotations

import argparse
import time

from diag.cli.args import (
    BACKENDS,
    add_chat_and_warmup_arguments,
    add_decoding_arguments,
    add_dtype_argument,
    add_model_argument,
    add_prompt_argument,
    check_decoding_arguments,
    check_model_name,
    given_decoding_options,
    prompts_of,
)

HELP = "generate text with one backend and print the latency report"
DESCRIPTION = (
    "Generates a continuation of every prompt with one backend (torch = diag.generate, "
    "onnx = diag.onnx_generate on the exported model, hf = model.generate), prints each "
    "generation and the latency report: batch size, input and output tokens, encode, "
    "generation, decode and total latency, ms per output token, output tokens/s."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``diag generate``."""
    add_model_argument(parser)
    add_prompt_argument(parser)
    parser.add_argument(
        "--backend",
        "-b",
        choices=BACKENDS,
        default="torch",
        help="torch = diag.generate, onnx = diag.onnx_generate, hf = model.generate "
        "(default: torch)",
    )
    add_chat_and_warmup_arguments(
        parser, "untimed generation calls (2 tokens) before the timed one"
    )
    parser.add_argument(
        "--force-export",
        action="store_true",
        help="with --backend onnx, export again even when the export cache has the model",
    )
    add_dtype_argument(
        parser,
        "--backend onnx runs its export (auto: the model's dtype, a bfloat16 model as "
        "float32: the CPU provider has no bfloat16 kernels)",
    )
    add_decoding_arguments(parser, max_new_tokens=64)


def run(args: argparse.Namespace) -> int:
    """Runs ``diag generate``; returns the exit code."""
    check_decoding_arguments(args.parser, args)
    check_model_name(args.model)
    prompts = prompts_of(args)
    if not prompts:
        args.parser.error("give at least one prompt with --prompt TEXT")

    import dataclasses

    # imported here: `--help` and the argument checks answer before torch is loaded
    from diag.cli.loading import encode_prompts, load_model
    from diag.cli.progress import progress
    from diag.cli.report import LatencyReport
    from diag.cli.runners import BACKEND_LABELS, decoding_options, make_runner
    from diag.export.plan.dtype import dtype_name, model_dtype

    model, tokenizer = load_model(args.model, args.dtype)
    # only what the user gave: the model's generation config decides the rest
    options = decoding_options(
        model, tokenizer, args.max_new_tokens, **given_decoding_options(args)
    )
    runner = make_runner(args.backend, model, force_export=args.force_export)
    begin = time.perf_counter()
    input_ids, attention_mask = encode_prompts(tokenizer, prompts, chat=args.chat)
    encode_seconds = time.perf_counter() - begin

    warmup = dataclasses.replace(options, max_new_tokens=min(2, options.max_new_tokens))
    for _ in progress(range(args.warmup), desc="warm-up"):
        runner(input_ids, attention_mask, warmup, seed=args.seed)

    result, seconds = runner(input_ids, attention_mask, options, seed=args.seed)

    begin = time.perf_counter()
    texts = result.texts(tokenizer)
    decode_seconds = time.perf_counter() - begin

    # the model's generation config may set num_return_sequences: count the rows
    per_prompt = len(texts) // len(prompts)
    print(
        f"model: {args.model} ({dtype_name(model_dtype(model))}), backend: {args.backend} "
        f"({BACKEND_LABELS[args.backend]})"
    )
    for i, text in enumerate(texts):
        prompt = prompts[i // per_prompt]
        title = f"prompt {i // per_prompt + 1}"
        if per_prompt > 1:
            title += f", sequence {i % per_prompt + 1}"
        print(f"----- {title} -----")
        if args.chat:
            print(f"user: {prompt}\nassistant: {text}")
        else:
            print(f"{prompt}{text}")
    print("-----")
    input_tokens = attention_mask.sum(dim=1).tolist()
    report = LatencyReport(
        batch_size=len(texts),
        input_tokens=[n for n in input_tokens for _ in range(per_prompt)],
        output_tokens=list(result.num_generated_tokens),
        encode_seconds=encode_seconds,
        generation_seconds=seconds,
        decode_seconds=decode_seconds,
    )
    print(report.format())
    return 0
