"""Golden records: what a model generated once, kept in a small JSON file, and the
check that it still generates it.

:func:`record` runs a model (torch or ONNX) on prompts and writes, atomically
(:func:`diag.helpers.atomic_write.write_text_atomically`):

* ``format`` / ``format_version``: what the file is (:data:`FORMAT`,
  :data:`FORMAT_VERSION`), checked before anything else is read;
* ``model``: its kind, a label and the SHA-256 of its weights (the torch state dict,
  or the ONNX initializers);
* ``versions``: torch, transformers, onnx, onnxruntime and diag at recording time;
* ``decoding``: the resolved decoding options and the sampling ``seed``;
* ``tolerance``: ``atol`` (export validation's rule, raised to 8 times the float32
  noise when the recorded side is a torch model) and ``rtol``;
* ``prompts`` (token ids) and, per generated row, its ``tokens`` and at every step
  the ``top`` candidates ``[token id, logit]`` (logits kept to 6 significant digits,
  far below any tolerance).

:func:`assert_matches_record` re-runs the model with the record's prompts and options
and compares the tokens exactly, and the logits of the recorded candidates within the
record's tolerance; its message says which step changed and what differs from the
record's environment (library versions, weights).

Example::

    record(model, ["def f(x):"], "golden.json", tokenizer=tok, max_new_tokens=10)
    assert_matches_record("model.onnx", "golden.json")
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import statistics
from typing import Any

import torch

import diag
from diag.compat.versions import installed_version
from diag.diagnose.divergence import first_divergent_step, near_tie_verdict, top_candidates
from diag.helpers.atomic_write import write_text_atomically
from diag.testing.noise import float32_noise, model_dtype, tolerance_of
from diag.testing.sides import (
    Side,
    as_side,
    encode_prompts,
    new_token_rows,
    options_as_dict,
    prompt_rows,
    resolve_decoding,
)
from diag.testing.tokens import describe_prompt

#: the ``format`` field of every record
FORMAT = "diag.testing.record"
#: the version of the layout below; a reader refuses a newer one
FORMAT_VERSION = 1
#: the packages whose versions a record keeps
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime")
_SIGNIFICANT = 6


class RecordError(ValueError):
    """The file is no diag record, or a damaged one."""


def rounded(value: float) -> float:
    """``value`` to 6 significant digits (a logit's float32 rounding is ~1e-7 of it).

    >>> rounded(3.14159265), rounded(-0.000123456789)
    (3.14159, -0.000123457)
    """
    return float(f"{value:.{_SIGNIFICANT}g}")


def environment_versions() -> dict[str, str | None]:
    """The installed versions a record keeps (None: not installed)."""
    found: dict[str, str | None] = {name: installed_version(name) for name in VERSIONED_PACKAGES}
    found["diag"] = diag.__version__
    return found


def weights_hash(side: Side) -> str | None:
    """SHA-256 of a side's weights: the torch state dict
    (:func:`diag.export.export_cache.state_dict_hash`) or the ONNX initializers (names,
    types, shapes, bytes); None for a session whose file is unknown."""
    if side.model is not None:
        from diag.export.export_cache import state_dict_hash

        return state_dict_hash(side.model)
    if side.onnx_model is None:
        return None
    import onnx
    from onnx import numpy_helper

    proto = side.onnx_model if isinstance(side.onnx_model, onnx.ModelProto) else onnx.load(side.onnx_model)
    digest = hashlib.sha256()
    for init in sorted(proto.graph.initializer, key=lambda t: t.name):
        digest.update(f"{init.name}|{init.data_type}|{tuple(init.dims)}|".encode())
        digest.update(numpy_helper.to_array(init).tobytes())
    return digest.hexdigest()


def make_record(
    side: Side,
    prompts: list[list[int]],
    rows: list[list[int]],
    row_logits: list[list[torch.Tensor]],
    options: dict[str, Any],
    seed: int | None,
    tolerance: dict[str, Any],
    *,
    num_candidates: int = 5,
    batched: bool = True,
    texts: list[str] | None = None,
) -> dict[str, Any]:
    """The record's content (see the module docstring) of a generation already made:
    ``rows`` the new tokens of every row, ``row_logits[r]`` the ``[vocab]`` logits of
    every step of row ``r``; ``batched``: the prompts ran as one batch (else each
    alone)."""
    per_prompt = len(rows) // len(prompts)
    generated = [
        {"prompt": r // per_prompt, "tokens": tokens,
         "top": [[[c.token_id, rounded(c.logit)] for c in top_candidates(step, num_candidates)]
                 for step in row_logits[r][: len(tokens)]]}
        for r, tokens in enumerate(rows)
    ]  # fmt: skip
    content: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"kind": side.kind, "label": side.label, "weights_sha256": weights_hash(side)},
        "versions": environment_versions(),
        "decoding": {**options, "seed": seed},
        "batched": batched,
        "num_candidates": num_candidates,
        "tolerance": tolerance,
        "prompts": prompts,
        "rows": generated,
    }
    if texts is not None:
        content["texts"] = texts
    return content


def write_record(content: dict[str, Any], path: str | os.PathLike) -> str:
    """Writes a record atomically; returns its path."""
    return write_text_atomically(path, json.dumps(content, indent=1) + "\n")


def run_prompts(
    side: Side,
    prompts: list[list[int]],
    options: Any,
    seed: int | None,
    pad: int,
    batched: bool,
    measure_noise: bool = False,
) -> tuple[list[list[int]], list[list[torch.Tensor]], list[float]]:
    """``(rows, row_logits, noises)`` of ``side`` on ``prompts``, as one batch or each
    prompt alone; ``noises`` the float32 noise of each run when measured (torch side)."""
    rows: list[list[int]] = []
    row_logits: list[list[torch.Tensor]] = []
    noises: list[float] = []
    for batch in [prompts] if batched else [[p] for p in prompts]:
        ids, mask = encode_prompts(batch, None, pad)
        result = side.generate(ids, mask, options, seed)
        new = new_token_rows(result)
        rows += new
        row_logits += [[step[r] for step in result.logits] for r in range(len(new))]
        if measure_noise:
            noise = float32_noise(side, ids, mask, options, result, seed)
            if noise is not None:
                noises.append(noise)
    return rows, row_logits, noises


def record(
    model_or_onnx: Any,
    prompts: Any,
    path: str | os.PathLike,
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 20,
    num_candidates: int = 5,
    atol: float | None = None,
    rtol: float = 0.0,
    noise_floor: bool = True,
    batched: bool = True,
    providers: Any = None,
    **decoding_options: Any,
) -> str:
    """Generates with ``model_or_onnx`` and writes its golden record to ``path``.

    :param model_or_onnx: a transformers causal LM, an ONNX file or folder, an
        ``onnx.ModelProto`` or an ``InferenceSession``
    :param prompts: text(s) (with ``tokenizer``), lists of token ids, a tensor or a
        tokenizer output; they run as one left-padded batch
    :param path: the JSON file written (atomically)
    :param max_new_tokens: length of the generations
    :param num_candidates: candidates (and their logits) kept per step
    :param atol: the record's absolute tolerance on logits; None: export validation's
        default for the dtype, raised to 8 times the float32 noise of a torch model
        (measured with a float64 copy, unless ``noise_floor=False``); an ONNX model
        has no float64 copy: its record keeps the default, tight enough for the same
        runtime; pass a larger ``atol`` to check other runtimes against it
    :param rtol: the record's relative tolerance
    :param batched: the prompts run as one left-padded batch (False: each alone, as
        ``python -m diag compare`` runs them)
    :param decoding_options: ``GenerationConfig`` names and ``seed`` (to sample)
    :return: the path written

    >>> import os, tempfile, diag.testing
    >>> from diag.models import get_untrained_model_with_inputs
    >>> m = get_untrained_model_with_inputs("llama")["model"]
    >>> p = diag.testing.record(m, [[5, 6, 7]], os.path.join(tempfile.mkdtemp(), "r.json"),
    ...                         max_new_tokens=3, noise_floor=False)
    >>> diag.testing.assert_matches_record(m, p)
    """
    side = as_side(model_or_onnx, "model", providers)
    options, seed = resolve_decoding(side.generation_defaults(), max_new_tokens, decoding_options)
    pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
    input_ids, attention_mask = encode_prompts(prompts, tokenizer, pad)
    rows, row_logits, noises = run_prompts(
        side, prompt_rows(input_ids, attention_mask), options, seed, pad, batched,
        measure_noise=noise_floor and atol is None,
    )  # fmt: skip
    noise = max(noises) if noises else None
    tolerance = {
        "atol": tolerance_of(atol, model_dtype(side), noise),
        "rtol": rtol,
        "float32_noise": noise,
    }
    texts = None
    if tokenizer is not None and isinstance(prompts, (str, list)) and all(
        isinstance(p, str) for p in ([prompts] if isinstance(prompts, str) else prompts)
    ):
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
    content = make_record(
        side, prompt_rows(input_ids, attention_mask), rows, row_logits, options_as_dict(options),
        seed, tolerance, num_candidates=num_candidates, batched=batched, texts=texts,
    )  # fmt: skip
    return write_record(content, path)


# -- reading -----------------------------------------------------------------------------


def _fail(path: str, what: str) -> RecordError:
    return RecordError(
        f"{path} is not a usable diag record: {what}. Write it again with "
        "diag.testing.record(...) (or pytest --diag-update-records, or "
        "python -m diag compare --record FILE)."
    )


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks a record; :class:`RecordError` when the file is not one."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"it is not JSON ({e})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise _fail(path, f"its 'format' is {found!r}, not {FORMAT!r} (a file of another tool?)")
    version = content.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _fail(
            path, f"format_version {version!r}; this diag ({diag.__version__}) reads "
            f"version {FORMAT_VERSION} and older"
        )  # fmt: skip
    try:
        prompts, rows, decoding = content["prompts"], content["rows"], content["decoding"]
        float(content["tolerance"]["atol"])
        if not isinstance(decoding, dict) or not prompts or not rows:
            raise TypeError("empty")
        for row in rows:
            if not 0 <= int(row["prompt"]) < len(prompts):
                raise ValueError(f"row of prompt {row['prompt']}")
            if len(row["top"]) != len(row["tokens"]):
                raise ValueError("a row has not one 'top' entry per token")
            [int(t) for t in row["tokens"]]
            [(int(i), float(v)) for step in row["top"] for i, v in step]
    except (KeyError, TypeError, ValueError) as e:
        raise _fail(path, f"a field is missing or malformed ({type(e).__name__}: {e})") from None
    return content


def environment_changes(content: dict[str, Any], side: Side | None = None) -> list[str]:
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
            changes.append(f"the record was made on a {model.get('kind')} model, this is {side.label}")
        else:
            sha = weights_hash(side)
            if sha is not None and model.get("weights_sha256") not in (None, sha):
                changes.append(
                    f"the weights changed (sha256 {str(model['weights_sha256'])[:12]}... -> {sha[:12]}...)"
                )
    return changes


def _candidates(top: list[list[float]], tokenizer: Any) -> str:
    text = (lambda i: f" {tokenizer.decode([int(i)])!r}") if tokenizer is not None else (lambda i: "")
    return " | ".join(f"{int(i)}{text(i)} ({v:.4g})" for i, v in top)


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
    compared = len(expected["tokens"]) if step is None else min(step + 1, len(tokens), len(expected["tokens"]))
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
    prompt = describe_prompt(int(expected["prompt"]), content["prompts"][int(expected["prompt"])], tokenizer)
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
            text = f" {tokenizer.decode([row[step]])!r}" if tokenizer is not None else ""
            return f"{row[step]}{text}"
        lines = [
            f"{prompt}, row {index}: the tokens changed at step {step} (after {step} identical "
            f"tokens): the record has {chose(expected['tokens'])}, now {chose(tokens)}",
            f"  recorded top: {_candidates(rec_top, tokenizer) or 'none (the record stopped)'}",
            f"  now      top: {_candidates(now_top, tokenizer) or 'none (stopped)'}",
        ]
        greedy = not content["decoding"].get("do_sample")
        if greedy and rec_top and step < len(expected["tokens"]) and expected["tokens"][step] != rec_top[0][0]:
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
        text = f" {tokenizer.decode([token])!r}" if tokenizer is not None else ""
        problems.append(
            f"{prompt}, row {index}: the logits moved beyond the record's tolerance at step {s}, "
            f"token {token}{text}: recorded {was:.6g}, now {now:.6g} (|diff| {diff:.3g} > "
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
    return "\n".join([f"{label} no longer matches the record {path}:", *problems, where])


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
    side = as_side(model_or_onnx, "model", providers)
    if prompts is not None or decoding_options:
        options, given_seed = decoding_options_of(side, decoding_options, content)
        pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
        given = prompt_rows(*encode_prompts(prompts, tokenizer, pad)) if prompts is not None else None
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
    options, seed = resolve_decoding(None, max_new_tokens, recorded)
    pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
    rows, per_row, _ = run_prompts(
        side, content["prompts"], options, seed, pad, bool(content.get("batched", True))
    )
    check_rows(content, path, side.label, rows, per_row, tokenizer, side=side)


def check_rows(
    content: dict[str, Any], path: str, label: str, rows: list[list[int]],
    row_logits: list[list[torch.Tensor]], tokenizer: Any = None, side: Side | None = None,
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


def decoding_options_of(side: Side, given: dict[str, Any], content: dict[str, Any]) -> tuple[Any, Any]:
    """The options :func:`record` would resolve for ``given`` on ``side`` (the
    record's length when ``max_new_tokens`` is not given)."""
    given = dict(given)
    max_new_tokens = given.pop("max_new_tokens", content["decoding"].get("max_new_tokens"))
    return resolve_decoding(side.generation_defaults(), max_new_tokens, given)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RecordError",
    "assert_matches_record",
    "check_rows",
    "compare_row",
    "environment_changes",
    "load_record",
    "make_record",
    "record",
    "report_of",
    "run_prompts",
    "write_record",
]
