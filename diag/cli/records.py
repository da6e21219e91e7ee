"""``diag compare --record FILE`` / ``--against FILE``: golden records from the command
line (:mod:`diag.testing.records`).

* ``--record FILE`` writes the record of the torch model on the command's prompts and
  options, each prompt alone as ``compare`` runs them (the tokens are those
  ``model.generate`` chose: compare checks diag.generate equals it);
* ``--against FILE`` checks the generations of every backend (``model.generate``,
  ``diag.generate``, ``onnx_generate``) against the record: the tokens exactly, the
  recorded candidates' logits within the record's tolerance; the exit code is 1 when
  one differs, with the step that changed and the library versions that moved.

Example::

    python -m diag compare --model tiny:llama --max-new-tokens 10 --record golden.json
    python -m diag compare --model tiny:llama --max-new-tokens 10 --against golden.json
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """``--record FILE`` and ``--against FILE``."""
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="write a golden record (tokens, top logits, versions) of the model to FILE",
    )
    parser.add_argument(
        "--against",
        metavar="FILE",
        help="check every backend against the golden record FILE (exit code 1 if one differs)",
    )


def check_record_arguments(args: argparse.Namespace) -> None:
    """Refuses a missing or unreadable ``--against`` file before anything runs."""
    against = getattr(args, "against", None)
    if not against:
        return
    if not os.path.isfile(against):
        args.parser.error(
            f"--against {against!r}: no such file; write one first with --record {against}"
        )
    from diag.testing.records import RecordError, load_record

    try:
        load_record(against)
    except RecordError as exc:
        args.parser.error(f"--against: {exc}")


def apply_records(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    decoding: dict[str, Any],
    generations: dict[str, list[Any]],
    labels: dict[str, str],
) -> bool:
    """Writes ``--record`` and checks ``--against``; returns True when a backend differs
    from the record. ``prompts`` are the token ids of each prompt, ``decoding`` the
    keyword arguments every backend ran with, ``generations[name][i]`` the
    :class:`~diag.generation.GenerateResult` of backend ``name`` on prompt ``i`` (with
    its logits)."""
    failed = False
    if getattr(args, "record", None):
        from diag.testing.records import record

        path = record(model, prompts, args.record, tokenizer=tokenizer, batched=False, **decoding)
        print(f"wrote record {path}")
    if getattr(args, "against", None):
        from diag.generation.steps import open_steps
        from diag.testing.record_check import check_rows
        from diag.testing.records import load_record

        content = load_record(args.against)
        stale = []
        if content["prompts"] != prompts:
            stale.append("the prompts")
        if content["decoding"].get("max_new_tokens") != decoding.get("max_new_tokens"):
            stale.append(f"max_new_tokens ({content['decoding'].get('max_new_tokens')} recorded)")
        if stale:
            print(
                f"the record {args.against} was made with other inputs ({', '.join(stale)}); "
                "run with the record's prompts and options, or write a new one with --record"
            )
            return True
        torch_side = open_steps(model)
        for name, gens in generations.items():
            rows = [g.generated()[0] for g in gens]
            row_logits = [g.row_logits()[0] for g in gens]
            try:
                check_rows(
                    content, args.against, f"{name} ({labels.get(name, name)})", rows, row_logits,
                    tokenizer, side=torch_side if name != "onnx" else None,
                )  # fmt: skip
            except AssertionError as e:
                failed = True
                print(e)
            else:
                print(f"{name} matches the record {args.against}")
    return failed


__all__ = ["add_record_arguments", "apply_records", "check_record_arguments"]
