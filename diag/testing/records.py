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

:func:`load_record` reads one back, refusing a foreign or damaged file;
:func:`diag.testing.record_check.assert_matches_record` re-runs the model and compares.

Example::

    record(model, ["def f(x):"], "golden.json", tokenizer=tok, max_new_tokens=10)
    assert_matches_record("model.onnx", "golden.json")
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any

import torch

import diag
from diag.compat.versions import installed_version
from diag.diagnose.divergence import top_candidates
from diag.diagnose.sides import comparison_options, generate_side, generate_with_noise
from diag.generation.steps import Steps, open_steps
from diag.helpers.atomic_write import write_text_atomically
from diag.testing.noise import tolerance_of
from diag.testing.prompts import encode_prompts, options_as_dict, prompt_rows

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


def weights_hash(side: Steps) -> str | None:
    """SHA-256 of a side's weights: the torch state dict
    (:func:`diag.export.plan.export_key.state_dict_hash`) or the ONNX initializers (names,
    types, shapes, bytes); None for a session whose file is unknown."""
    if side.model is not None:
        from diag.export.plan.export_key import state_dict_hash

        return state_dict_hash(side.model)
    if side.onnx_model is None:
        return None
    import onnx
    from onnx import numpy_helper

    from diag.contract.files import load_onnx

    proto = (
        side.onnx_model
        if isinstance(side.onnx_model, onnx.ModelProto)
        else load_onnx(side.onnx_model, load_external_data=True)
    )
    digest = hashlib.sha256()
    for init in sorted(proto.graph.initializer, key=lambda t: t.name):
        digest.update(f"{init.name}|{init.data_type}|{tuple(init.dims)}|".encode())
        digest.update(numpy_helper.to_array(init).tobytes())
    return digest.hexdigest()


def make_record(
    side: Steps,
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
    side: Steps,
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
        if measure_noise:
            result, noise = generate_with_noise(side, ids, mask, options, seed)
            noises += [] if noise is None else [noise]
        else:
            result = generate_side(side, ids, mask, options, seed)
        rows += result.generated()
        row_logits += result.row_logits()
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
    :param tokenizer: encodes text prompts, and stores the tokens' text in the record
    :param max_new_tokens: length of the generations
    :param num_candidates: candidates (and their logits) kept per step
    :param atol: the record's absolute tolerance on logits; None: export validation's
        default for the dtype, raised to 8 times the float32 noise of a torch model
        (measured with a float64 copy, unless ``noise_floor=False``); an ONNX model
        has no float64 copy: its record keeps the default, tight enough for the same
        runtime; pass a larger ``atol`` to check other runtimes against it
    :param rtol: the record's relative tolerance
    :param noise_floor: measures the float32 noise of a torch model (see ``atol``)
    :param providers: ONNX Runtime's execution providers for an ONNX model (None:
        the CPU)
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
    side = open_steps(model_or_onnx, providers=providers)
    options, seed = comparison_options(side.defaults, max_new_tokens, decoding_options)
    pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
    input_ids, attention_mask = encode_prompts(prompts, tokenizer, pad)
    rows, row_logits, noises = run_prompts(
        side, prompt_rows(input_ids, attention_mask), options, seed, pad, batched,
        measure_noise=noise_floor and atol is None,
    )  # fmt: skip
    noise = max(noises) if noises else None
    tolerance = {
        "atol": tolerance_of(atol, noise, side),
        "rtol": rtol,
        "float32_noise": noise,
    }
    texts = None
    if (
        tokenizer is not None
        and isinstance(prompts, (str, list))
        and all(isinstance(p, str) for p in ([prompts] if isinstance(prompts, str) else prompts))
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


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RecordError",
    "load_record",
    "make_record",
    "record",
    "run_prompts",
    "write_record",
]
