"""What a quantized export does to the tokens: :func:`quantization_report`.

Built on the rest of :mod:`diag.diagnose`, against the float32 torch model:

* per prompt, a teacher-forced comparison
  (:func:`~diag.diagnose.teacher_forced.compare_teacher_forced`, both sides read
  torch's greedy continuation): top-1 agreement, mean and worst KL(torch || onnx),
  top-5 overlap;
* per prompt, a free-running greedy generation on both sides
  (:func:`~diag.diagnose.free_running.first_divergence`): the first step where the
  tokens part, both sides' candidates and margins, and the near-tie verdict;
* the perplexity of a fixed text under each side (teacher-forced along the text's
  own tokens, :func:`~diag.diagnose.metrics.perplexity`).

It takes any ONNX file that :func:`diag.onnx_generate` drives (a path, or a folder
holding one ``.onnx`` file); the quantization options of diag's exports are read
from the file's metadata into the report.

Example::

    report = quantization_report(model, diag.export_causal_lm(model, quantize="int4"),
                                 ["def fib(n):", "The capital of France is"],
                                 tokenizer=tokenizer, max_new_tokens=30)
    report.table          # one row per prompt, then "all"
    report.plot()         # agreement per prompt, KL per step
    print(report)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from diag.contract.detect import onnx_file_in
from diag.diagnose.divergence import Divergence
from diag.diagnose.free_running import first_divergence
from diag.diagnose.metrics import perplexity
from diag.diagnose.teacher_forced import compare_teacher_forced
from diag.generation.decoding import check_inputs
from diag.helpers.wrap import wrap_report

#: the text whose perplexity the report measures when none is given (code and prose)
DEFAULT_TEXT = (
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nThe Fibonacci numbers grow exponentially: each one is the sum of the "
    "two before it, and the ratio of two consecutive numbers tends to the golden ratio."
)

_TABLE_COLUMNS = [
    "prompt", "steps", "top1_agreement", "mean_kl", "worst_kl", "top5_overlap",
    "first_divergent_step", "torch_token", "onnx_token", "torch_margin", "onnx_margin",
    "near_tie", "torch_top", "onnx_top",
]  # fmt: skip


@dataclass
class QuantizationReport:
    """What :func:`quantization_report` measured.

    ``table``: one row per prompt and a last row ``"all"`` (agreement and KL over every
    step of every prompt, the earliest divergence): ``steps``, ``top1_agreement``,
    ``mean_kl``, ``worst_kl``, ``top5_overlap`` (teacher-forced), then
    ``first_divergent_step`` (free-running, NaN when the streams agree), the tokens each
    side chose there, their margins, ``near_tie`` and both sides' top candidates.
    """

    table: pd.DataFrame
    #: the teacher-forced rows of every prompt (``compare_teacher_forced``'s columns and
    #: ``prompt``, the prompt's index)
    steps: pd.DataFrame
    #: the free-running divergence of every prompt
    divergences: list[Divergence]
    #: ``{"torch": ..., "onnx": ...}``: the perplexity of ``text`` under each side
    perplexity: dict[str, float]
    #: the text whose perplexity was measured
    text: str | None = None
    #: the file compared and its quantization options (its metadata; None when absent)
    onnx_path: str | None = None
    quantization: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        q = self.quantization
        what = f" ({q.get('bits')}-bit, block {q.get('block_size')})" if q else ""
        s = self.summary
        lines = [
            f"quantization report of {self.onnx_path}{what} against float32 torch:",
            f"  top-1 agreement {s['top1_agreement']:.3f}, top-5 overlap {s['top5_overlap']:.3f}, "
            f"KL mean {s['mean_kl']:.3g} worst {s['worst_kl']:.3g} "
            f"({s['steps']} teacher-forced steps, {s['prompts']} prompts)",
            f"  perplexity: torch {self.perplexity['torch']:.4g}, onnx {self.perplexity['onnx']:.4g}",
        ]
        for i, div in enumerate(self.divergences):
            head = f"  prompt {i}: "
            lines.append(head + str(div).replace("\n", "\n" + " " * len(head)))
        return wrap_report("\n".join(lines))

    def plot(self, axes: Any = None, title: str | None = None) -> Any:
        """Two panels: the teacher-forced top-1 agreement and top-5 overlap of each
        prompt (bars), and the KL of every step per prompt (log scale), a cross where
        the free-running streams part. Returns the two Axes.

        :param axes: two matplotlib Axes (a new figure when None)
        :param title: the figure's title (None: a default one)
        """
        from diag.diagnose.plot import plot_quantization

        return plot_quantization(self, axes=axes, title=title)


def resolve_onnx(onnx_path_or_folder: Any) -> Any:
    """A folder holding one ``.onnx`` file (``model.onnx`` first) -> that file; anything
    else (a path, a session, a backend, an ExportResult) as it is.

    >>> resolve_onnx("model.onnx")
    'model.onnx'
    """
    if isinstance(onnx_path_or_folder, os.PathLike):
        onnx_path_or_folder = os.fspath(onnx_path_or_folder)
    if isinstance(onnx_path_or_folder, str) and os.path.isdir(onnx_path_or_folder):
        return onnx_file_in(onnx_path_or_folder)
    return onnx_path_or_folder


def _encode(prompt: Any, tokenizer: Any) -> torch.Tensor:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("the prompts are strings: give the tokenizer (tokenizer=...).")
        return torch.tensor([tokenizer(prompt).input_ids], dtype=torch.long)
    # the prompt check of the generate loop: integer ids, none negative, 2-D
    ids, _ = check_inputs(torch.as_tensor(prompt), None)
    if ids.shape[0] != 1:
        raise ValueError(
            f"a prompt is a string or the token ids of one prompt ([seq] or [1, seq]), got "
            f"shape {tuple(ids.shape)}."
        )
    return ids


def _label(prompt: Any, tokenizer: Any, width: int = 40) -> str:
    text = prompt if isinstance(prompt, str) else (
        tokenizer.decode(torch.as_tensor(prompt).reshape(-1).tolist())
        if tokenizer is not None else f"{len(torch.as_tensor(prompt).reshape(-1))} tokens"
    )  # fmt: skip
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _top(div: Divergence, side: str) -> str:
    return " | ".join(str(c) for c in getattr(div, f"{side}_top"))


def _row(label: str, tf: pd.DataFrame, overlap: str, div: Divergence) -> dict[str, Any]:
    return {
        "prompt": label,
        "steps": len(tf),
        "top1_agreement": float(tf["argmax_agree"].mean()),
        "mean_kl": float(tf["kl_div"].mean()),
        "worst_kl": float(tf["kl_div"].max()),
        "top5_overlap": float(tf[overlap].mean()),
        "first_divergent_step": float("nan") if div.step is None else div.step,
        "torch_token": div.reference_text
        if div.reference_text is not None
        else div.reference_token,
        "onnx_token": div.other_text if div.other_text is not None else div.other_token,
        "torch_margin": div.reference_margin,
        "onnx_margin": div.other_margin,
        "near_tie": div.near_tie,
        "torch_top": _top(div, "reference"),
        "onnx_top": _top(div, "other"),
    }


def _text_perplexity(torch_side: Any, onnx_side: Any, ids: torch.Tensor) -> dict[str, float]:
    """Both sides read the text's own tokens: the first as the prompt, then the others
    forced, each predicted from the ones before."""
    if ids.shape[1] < 2:
        raise ValueError("the perplexity text needs at least two tokens.")
    tf = compare_teacher_forced(torch_side, onnx_side, ids[:, :1], tokens=ids[0, 1:])
    return {
        "torch": perplexity(torch.tensor(tf["torch_logprob"].to_numpy())),
        "onnx": perplexity(torch.tensor(tf["onnx_logprob"].to_numpy())),
    }


def quantization_report(
    model: Any,
    onnx_path_or_folder: Any,
    prompts: str | Sequence[Any],
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 20,
    text: str | Sequence[int] | None = DEFAULT_TEXT,
    providers: Any = None,
    num_candidates: int = 5,
    free_running: int | None = None,
) -> QuantizationReport:
    """Compares an ONNX model (quantized, typically) with the float32 torch model on
    several prompts; see the module docstring for what is measured.

    :param model: the float32 transformers causal LM the file was exported from
    :param onnx_path_or_folder: the ONNX file (a path, a folder holding one, an
        ``InferenceSession``, an :class:`~diag.ort.backend.OrtBackend` or an
        ``ExportResult``)
    :param prompts: a string, or a list of strings and / or token ids (one prompt each,
        no batch: every prompt runs alone)
    :param tokenizer: needed for string prompts and ``text``; adds the tokens' text
    :param max_new_tokens: teacher-forced and free-running steps per prompt
    :param text: the text whose perplexity is measured under each side (a string or
        token ids; None: no perplexity)
    :param providers: ONNX Runtime providers of the session
    :param num_candidates: candidates of each side at a divergence
    :param free_running: new tokens of the free-running generations (None:
        ``max_new_tokens``; 0: none, the divergence columns stay empty)
    :return: a :class:`QuantizationReport` (``.table``, ``.plot()``, ``str()``)

    Both sides are built once (:func:`~diag.generation.steps.open_steps`: one
    session for every prompt). The free-running side is greedy with no eos, so that
    each stream has ``max_new_tokens`` tokens.
    """
    from diag.contract import metadata_quantization
    from diag.generation.steps import open_steps

    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, torch.Tensor):
        # token ids: one prompt ([seq]) or one per row ([n, seq])
        prompts = [prompts] if prompts.dim() < 2 else list(prompts)
    if not prompts:
        raise ValueError("give at least one prompt.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    free_running = max_new_tokens if free_running is None else free_running
    if not isinstance(free_running, int) or free_running < 0:
        raise ValueError(f"free_running must be an int >= 0, got {free_running!r}.")
    # the prompts first: a bad one fails before a session is built
    encoded = [_encode(p, tokenizer) for p in prompts]
    text_ids = _encode(text, tokenizer) if text is not None else None
    onnx_side_input = resolve_onnx(onnx_path_or_folder)
    torch_side = open_steps(model)
    onnx_side = open_steps(onnx_side_input, providers=providers, what="onnx_path_or_folder")
    session = getattr(onnx_side.backend, "session", None)
    quantization = metadata_quantization(session) if session is not None else None

    rows, parts, divergences = [], [], []
    overlap = "top5_overlap"
    for i, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True)):
        tf = compare_teacher_forced(
            torch_side, onnx_side, ids, max_new_tokens=max_new_tokens, top_k=5, tokenizer=tokenizer
        )
        if free_running:
            div = first_divergence(
                torch_side, onnx_side, ids, max_new_tokens=free_running, tokenizer=tokenizer,
                num_candidates=num_candidates, eos_token_id=None,
            )  # fmt: skip
        else:
            div = Divergence(step=None, batch_index=None, num_steps=0)
        rows.append(_row(_label(prompt, tokenizer), tf, overlap, div))
        parts.append(tf.assign(prompt=i))
        divergences.append(div)
    steps = pd.concat(parts, ignore_index=True)
    diverged = [(d.step, i) for i, d in enumerate(divergences) if d.step is not None]
    earliest = divergences[min(diverged)[1]] if diverged else divergences[0]
    total = _row("all", steps, overlap, earliest)
    rows.append(total)
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    ppl = {"torch": float("nan"), "onnx": float("nan")}
    if text_ids is not None:
        ppl = _text_perplexity(torch_side, onnx_side, text_ids)
    table.attrs.update(perplexity=ppl, quantization=quantization)
    summary = {k: total[k] for k in ("top1_agreement", "mean_kl", "worst_kl", "top5_overlap")}
    summary.update(
        steps=len(steps),
        prompts=len(prompts),
        first_divergent_step=total["first_divergent_step"],
        perplexity_torch=ppl["torch"],
        perplexity_onnx=ppl["onnx"],
    )
    path = (
        onnx_side_input
        if isinstance(onnx_side_input, str)
        else getattr(onnx_side_input, "filename", None)
    )
    return QuantizationReport(
        table=table,
        steps=steps,
        divergences=divergences,
        perplexity=ppl,
        text=text if isinstance(text, str) else None,
        onnx_path=path,
        quantization=quantization,
        summary=summary,
    )


__all__ = ["DEFAULT_TEXT", "QuantizationReport", "quantization_report", "resolve_onnx"]
