"""The check of a golden record (:mod:`diag.testing.records` writes and reads them):
:func:`assert_matches_record` re-runs the model with the record's prompts and options
and compares the tokens exactly, and the logits of the recorded candidates within the
record's tolerance; its message says which step changed and what differs from the
record's environment (library versions, weights).

Example::

    assert_matches_record("model.onnx", "golden.json")
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import torch

from diag.diagnose.divergence import (
    Candidate,
    first_divergent_step,
    near_tie_verdict,
    top_candidates,
)
from diag.diagnose.sides import comparison_options
from diag.diagnose.token_text import shown_token, token_text
from diag.generation.steps import Steps, open_steps
from diag.helpers.wrap import wrap_report
from diag.testing.prompts import encode_prompts, options_as_dict, prompt_rows
from diag.testing.records import (
    environment_versions,
    load_record,
    run_prompts,
    weights_hash,
)
from diag.testing.tokens import describe_prompt


def environment_changes(content: dict[str, Any], side: Steps | None = None) -> list[str]:
    """What differs between the record's environment and this one: library versions
    and (``side`` given, of the recorded kind) the weights."""
    now = environment_versions()
    changes = [
        f"{name} {was} -> {now.get(name)}"
        for name, was in sorted(content.get("versions", {}).items())
        if now.get(name) != was
    ]
    model = content.get("model", {})
    if side is not None:
        if side.kind != model.get("kind"):
            changes.append(
                f"the record was made on a {model.get('kind')} model, this is {side.label}"
            )
        else:
            sha = weights_hash(side)
            if sha is not None and model.get("weights_sha256") not in (None, sha):
                changes.append(
                    f"the weights changed (sha256 {str(model['weights_sha256'])[:12]}... -> {sha[:12]}...)"
                )
    return changes


def _candidates(top: list[list[float]], tokenizer: Any) -> str:
    return " | ".join(str(Candidate(int(i), v, token_text(tokenizer, i))) for i, v in top)


def compare_row(
    content: dict[str, Any], index: int, tokens: list[int], logits: list[torch.Tensor],
    tokenizer: Any = None,
) -> list[str]:  # fmt: skip
    """What changed in row ``index`` of the record: ``tokens`` its new tokens now,
    ``logits`` its ``[vocab]`` logits of every step. Empty when it matches."""
    expected = content["rows"][index]
    tol = content["tolerance"]
    atol, rtol = float(tol["atol"]), float(tol.get("rtol") or 0.0)
    step = first_divergent_step(expected["tokens"], tokens)
    compared = (
        len(expected["tokens"])
        if step is None
        else min(step + 1, len(tokens), len(expected["tokens"]))
    )
    diffs: list[float] = []
    moved = None
    for s in range(compared):
        ids = torch.tensor([int(i) for i, _ in expected["top"][s]])
        was = torch.tensor([float(v) for _, v in expected["top"][s]], dtype=torch.float64)
        now = logits[s].double()[ids]
        diff = (now - was).abs().nan_to_num(torch.inf)
        diffs.append(float(diff.max()))
        beyond = diff > atol + rtol * was.abs()
        if moved is None and bool(beyond.any()) and s != step:
            j = int((diff - atol - rtol * was.abs()).argmax())
            moved = (s, int(ids[j]), float(was[j]), float(now[j]), float(diff[j]))
    problems = []
    prompt = describe_prompt(
        int(expected["prompt"]), content["prompts"][int(expected["prompt"])], tokenizer
    )
    if step is not None:
        rec_top = expected["top"][step] if step < len(expected["top"]) else []
        now_top = (
            [[c.token_id, c.logit] for c in top_candidates(logits[step], len(rec_top) or 5)]
            if step < len(logits)
            else []
        )

        def chose(row: list[int]) -> str:
            if step >= len(row):
                return "stopped"
            return shown_token(row[step], token_text(tokenizer, row[step]))

        lines = [
            f"{prompt}, row {index}: the tokens changed at step {step} (after {step} identical "
            f"tokens): the record has {chose(expected['tokens'])}, now {chose(tokens)}",
            f"  recorded top: {_candidates(rec_top, tokenizer) or 'none (the record stopped)'}",
            f"  now      top: {_candidates(now_top, tokenizer) or 'none (stopped)'}",
        ]
        greedy = not content["decoding"].get("do_sample")
        if (
            greedy
            and rec_top
            and step < len(expected["tokens"])
            and expected["tokens"][step] != rec_top[0][0]
        ):
            lines.append(
                "  the record's token at this step is not its own best candidate, as greedy "
                "decoding chooses: the record was edited or damaged"
            )
        if len(rec_top) >= 2 and len(now_top) >= 2 and step < len(diffs):
            rec_margin = rec_top[0][1] - rec_top[1][1]
            now_margin = now_top[0][1] - now_top[1][1]
            typical = statistics.median(diffs[:step]) if step else None
            _, verdict = near_tie_verdict(
                torch.tensor([v for _, v in rec_top]), rec_margin, now_margin, typical,
                diffs[step], names=("the record", "this run"),
            )  # fmt: skip
            lines.append(
                f"  margins: recorded {rec_margin:.4g}, now {now_margin:.4g}; |logits diff| on the "
                f"recorded candidates at this step: {diffs[step]:.3g} (record tolerance {atol:.3g})"
            )
            lines.append(f"  verdict: {verdict}")
        problems.append("\n".join(lines))
    if moved is not None:
        s, token, was, now, diff = moved
        shown = shown_token(token, token_text(tokenizer, token))
        problems.append(
            f"{prompt}, row {index}: the logits moved beyond the record's tolerance at step {s}, "
            f"token {shown}: recorded {was:.6g}, now {now:.6g} (|diff| {diff:.3g} > "
            f"atol {atol:.3g}" + (f" + rtol {rtol:g}" if rtol else "") + ")"
        )
    return problems


def report_of(path: str, label: str, problems: list[str], changes: list[str]) -> str:
    """The failure message of a record check."""
    where = (
        "what differs from the record's environment: " + "; ".join(changes)
        if changes
        else "the library versions and the weights are those of the record: the change comes "
        "from the code (diag, the model's or the export's)"
    )
    return wrap_report(
        "\n".join([f"{label} no longer matches the record {path}:", *problems, where])
    )


def assert_matches_record(
    model_or_onnx: Any,
    path: str | os.PathLike,
    *,
    prompts: Any = None,
    tokenizer: Any = None,
    providers: Any = None,
    **decoding_options: Any,
) -> None:
    """Re-runs the record's prompts and options on ``model_or_onnx`` and asserts the
    same tokens (exactly) and logits (the recorded candidates', within the record's
    tolerance).

    :param model_or_onnx: a transformers causal LM, an ONNX file or folder, a
        ModelProto or a session (the recorded one, or its export)
    :param path: the record
    :param prompts: when given (with ``decoding_options``), checked to be the
        record's: a test whose inputs changed needs a new record
    :param tokenizer: adds the tokens' text to the message
    :param providers: ONNX Runtime's execution providers for an ONNX model (None:
        the CPU)
    :raises RecordError: the file is not a record (or a damaged one)
    :raises AssertionError: what changed, at which step, and which library versions
        differ from the record's
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no record at {path!r}: write it first with diag.testing.record(...) (or pytest "
            "--diag-update-records)."
        )
    content = load_record(path)
    side = open_steps(model_or_onnx, providers=providers)
    if prompts is not None or decoding_options:
        options, given_seed = decoding_options_of(side, decoding_options, content)
        pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
        given = (
            prompt_rows(*encode_prompts(prompts, tokenizer, pad)) if prompts is not None else None
        )
        stale = []
        if given is not None and given != content["prompts"]:
            stale.append("the prompts")
        now = {**options_as_dict(options), "seed": given_seed}
        stale += [f"{k} ({content['decoding'].get(k)!r} recorded, {v!r} now)"
                  for k, v in now.items() if content["decoding"].get(k, v) != v]  # fmt: skip
        if stale:
            raise AssertionError(
                f"the record {path} was made with other inputs: {', '.join(stale)} differ; "
                "write it again (diag.testing.record or pytest --diag-update-records)."
            )
    # the recorded options are resolved already: no model default comes in
    recorded = dict(content["decoding"])
    max_new_tokens = recorded.pop("max_new_tokens")
    if recorded.get("max_length") is None:
        recorded.pop("max_length", None)
    options, seed = comparison_options(None, max_new_tokens, recorded)
    pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
    rows, per_row, _ = run_prompts(
        side, content["prompts"], options, seed, pad, bool(content.get("batched", True))
    )
    check_rows(content, path, side.label, rows, per_row, tokenizer, side=side)


def check_rows(
    content: dict[str, Any], path: str, label: str, rows: list[list[int]],
    row_logits: list[list[torch.Tensor]], tokenizer: Any = None, side: Steps | None = None,
) -> None:  # fmt: skip
    """Raises the AssertionError of :func:`assert_matches_record` when ``rows`` (the new
    tokens of every row) and ``row_logits`` (their ``[vocab]`` logits per step) differ
    from the record's; ``label`` names what generated them, ``side`` (when given) has
    its weights compared with the record's."""
    problems: list[str] = []
    if len(rows) != len(content["rows"]):
        problems.append(f"{len(rows)} rows generated, the record has {len(content['rows'])}")
    else:
        for r, (tokens, logits) in enumerate(zip(rows, row_logits, strict=True)):
            problems += compare_row(content, r, tokens, logits, tokenizer)
    if problems:
        raise AssertionError(report_of(path, label, problems, environment_changes(content, side)))


def decoding_options_of(
    side: Steps, given: dict[str, Any], content: dict[str, Any]
) -> tuple[Any, Any]:
    """The options :func:`record` would resolve for ``given`` on ``side`` (the
    record's length when ``max_new_tokens`` is not given)."""
    given = dict(given)
    max_new_tokens = given.pop("max_new_tokens", content["decoding"].get("max_new_tokens"))
    return comparison_options(side.defaults, max_new_tokens, given)


__all__ = [
    "assert_matches_record",
    "check_rows",
    "compare_row",
    "environment_changes",
    "report_of",
]
