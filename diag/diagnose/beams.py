"""Where two beam searches part, and why: what
:func:`~diag.diagnose.sides.compare_results` reads when both sides kept their steps'
decisions (:func:`~diag.diagnose.divergence.find_divergence` compares the rest).

Two sides run the same beam search (same prompts, options and seed); each
:class:`~diag.generation.result.GenerateResult` keeps what every step decided
(``beam_steps``: the rows that go on, their tokens and running scores, the first
``num_beams`` candidates, whether a prompt's search goes on) with the logits and the
processed log-probabilities (``scores``) of every row. While both sides decided alike,
their rows hold the same hypotheses, so a row's logits and scores compare between
sides. A prompt's divergence is the first step where its decisions differ, read in
this order:

1. the running hypotheses chosen, in their order (the rows each continues, the token
   each appends);
2. the first ``num_beams`` candidates (those that end there enter the finished
   hypotheses);
3. whether the search of that prompt goes on.

The report names the two candidates the sides ranked the other way (the row each
extends, its token), the score of each on both sides (``score(row) + log p(token)``),
the gap each side puts between its choice and the other's (its *margin*), and the
verdict of :func:`~diag.diagnose.divergence.near_tie_verdict`: logits that differ by
more than rounding on the steps before: not rounding; else both margins within
``NEAR_TIE_FACTOR`` times the largest score difference of a candidate between the
sides on the steps before (the rounding of summed log-probabilities grows with the
steps): a near tie.

Example::

    div = find_beam_divergence(torch_result, onnx_result, names=("torch", "onnx"))
    div.step, div.hypotheses, div.near_tie
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from diag.diagnose.divergence import (
    NEAR_TIE_FACTOR,
    BeamCandidate,
    Divergence,
    first_divergent_step,
    near_tie_verdict,
)
from diag.diagnose.metrics import max_abs_diff
from diag.diagnose.token_text import token_text
from diag.generation.beam_search import NEVER, start_scores
from diag.generation.result import GenerateResult

#: a decision: the (row, token) pairs chosen, in order
_Choices = list[tuple[int, int]]


class _Search:
    """One side's beam search, read step by step."""

    def __init__(self, result: GenerateResult, name: str, returned: list[list[int]]):
        if not result.beam_steps:
            raise ValueError(
                f"{name}'s result holds no beam search steps: compare two beam searches "
                "(num_beams > 1 and max_new_tokens > 0 on both sides)."
            )
        self.result = result
        self.steps = result.beam_steps
        first = self.steps[0]
        self.batch, self.beams = (int(n) for n in first.candidate_rows.shape)
        #: the new tokens of every returned row (``num_return_sequences`` per prompt)
        self.returned = returned
        self.per_return = len(returned) // self.batch

    def returns_other(self, other: _Search, prompt: int) -> bool:
        """Whether ``other`` returns other sequences than this search for ``prompt``."""
        rows = range(prompt * self.per_return, (prompt + 1) * self.per_return)
        return any(self.returned[r] != other.returned[r] for r in rows)

    def __len__(self) -> int:
        return len(self.steps)

    def rows(self, prompt: int) -> slice:
        return slice(prompt * self.beams, (prompt + 1) * self.beams)

    def choices(self, step: int, prompt: int) -> tuple[_Choices, _Choices]:
        """The running hypotheses chosen at ``step`` and the first candidates."""
        s, rows = self.steps[step], self.rows(prompt)
        running = list(zip(s.rows[rows].tolist(), s.tokens[rows].tolist(), strict=True))
        first = list(
            zip(s.candidate_rows[prompt].tolist(), s.candidate_tokens[prompt].tolist(), strict=True)
        )
        return running, first

    def goes_on(self, step: int, prompt: int) -> bool:
        return bool(self.steps[step].open[prompt])

    def previous(self, step: int) -> torch.Tensor:
        """The running scores ``[rows]`` the candidates of ``step`` extend."""
        if step == 0:
            return start_scores(self.batch, self.beams).flatten().double()
        return self.steps[step - 1].scores.double()

    def log_probs(self, step: int) -> torch.Tensor | None:
        if self.result.scores is not None:
            return self.result.scores[step].double()
        if self.result.logits is not None:
            return torch.log_softmax(self.result.logits[step].double(), dim=-1)
        return None

    def totals(self, step: int, prompt: int) -> torch.Tensor | None:
        """Every candidate's score ``[num_beams, vocab]`` of ``prompt`` at ``step``."""
        lp = self.log_probs(step)
        rows = self.rows(prompt)
        return None if lp is None else self.previous(step)[rows, None] + lp[rows]

    def score(self, step: int, choice: tuple[int, int] | None) -> float | None:
        lp = self.log_probs(step)
        if lp is None or choice is None:
            return None
        row, token = choice
        return float(self.previous(step)[row] + lp[row, token])

    def hypotheses(self, steps: int) -> list[list[int]]:
        """The new tokens of every row after the first ``steps`` steps."""
        rows: list[list[int]] = [[] for _ in range(self.batch * self.beams)]
        for s in self.steps[:steps]:
            rows = [rows[r] + [t] for r, t in zip(s.rows.tolist(), s.tokens.tolist(), strict=True)]
        return rows


def _first_difference(a: _Choices, b: _Choices) -> int | None:
    return next((j for j, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def _prompt_divergence(
    ref: _Search, other: _Search, prompt: int, names: tuple[str, str]
) -> tuple[int, str, Any, Any, int] | None:
    """``(step, what, reference choice, other choice, comparable)`` of ``prompt``'s
    first differing decision, None when they agree; a choice is ``(row, token)`` or
    None; ``comparable``: the steps whose logits compare (the rows hold the same
    hypotheses on both sides)."""
    shorter = min(len(ref), len(other))
    for t in range(max(len(ref), len(other))):
        if t > 0:
            a, b = ref.goes_on(t - 1, prompt), other.goes_on(t - 1, prompt)
            if not (a or b):
                return None
            if a != b:
                stopped, went_on = names if not a else names[::-1]
                return (
                    t,
                    f"{stopped} ends this prompt's search after step {t - 1}, {went_on} goes on",
                    None,
                    None,
                    t,
                )
        if t >= shorter:
            ended = names[0] if t >= len(ref) else names[1]
            return t, f"{ended}'s search ended after step {t - 1}", None, None, t
        (run_a, first_a), (run_b, first_b) = ref.choices(t, prompt), other.choices(t, prompt)
        j = _first_difference(run_a, run_b)
        if j is not None:
            return t, "the hypotheses chosen differ", run_a[j], run_b[j], t + 1
        j = _first_difference(first_a, first_b)
        if j is not None:
            return t, "the candidates that may end differ", first_a[j], first_b[j], t + 1
    return None


def _slot(
    choice: tuple[int, int], search: _Search, step: int, prompt: int, running: bool
) -> int | None:
    chosen = search.choices(step, prompt)[0 if running else 1]
    return chosen.index(choice) if choice in chosen else None


def _logit_diffs(ref: _Search, other: _Search, prompt: int, steps: int) -> list[float]:
    """max |logits| difference over the prompt's rows, each of the first ``steps`` steps."""
    if ref.result.logits is None or other.result.logits is None:
        return []
    rows = ref.rows(prompt)
    return [
        float(max_abs_diff(ref.result.logits[t][rows], other.result.logits[t][rows]).max())
        for t in range(steps)
    ]


def _score_diff(ref: _Search, other: _Search, step: int, prompt: int) -> float | None:
    """The largest difference between the two sides' scores of one candidate at ``step``
    (the started hypotheses only; the tokens a processor forbade left out)."""
    a, b = ref.totals(step, prompt), other.totals(step, prompt)
    if a is None or b is None:
        return None
    live = (ref.previous(step)[ref.rows(prompt)] > NEVER / 2)[:, None]
    both = live & torch.isfinite(a) & torch.isfinite(b)
    return float((a - b).abs()[both].max()) if bool(both.any()) else 0.0


def find_beam_divergence(
    reference: GenerateResult,
    other: GenerateResult,
    *,
    names: tuple[str, str] = ("torch", "onnx"),
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    quantized_bits: int | None = None,
    prompts: Sequence[int] | None = None,
) -> Divergence:
    """The first :class:`~diag.diagnose.divergence.Divergence` of two beam searches of
    the same prompts (see the module), falsy when they agree.

    :param reference: a beam search's result (``num_beams > 1``, ``output_scores`` or
        ``output_logits`` kept for the scores and the verdict)
    :param other: the other side's, same prompts and options
    :param names: the names of the two sides in the report
    :param tokenizer: adds the text of the tokens to the report
    :param dtype: the narrowest float dtype of the two sides (None: float32)
    :param quantized_bits: the other side is quantized to that many bits
    :param prompts: the prompts compared (None: all)

    >>> from diag.generation import generate
    >>> from diag.models import get_untrained_model_with_inputs
    >>> m = get_untrained_model_with_inputs("llama")["model"]
    >>> r = generate(m, torch.tensor([[5, 6, 7]]), max_new_tokens=3, num_beams=2,
    ...              do_sample=False, output_scores=True, return_result=True)
    >>> find_beam_divergence(r, r).step is None
    True
    """
    return beam_divergence(
        reference, other, reference.generated(), other.generated(), names=names,
        tokenizer=tokenizer, dtype=dtype, quantized_bits=quantized_bits, prompts=prompts,
    )  # fmt: skip


def beam_divergence(
    reference: GenerateResult,
    other: GenerateResult,
    reference_rows: list[list[int]],
    other_rows: list[list[int]],
    *,
    names: tuple[str, str] = ("torch", "onnx"),
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    quantized_bits: int | None = None,
    prompts: Sequence[int] | None = None,
) -> Divergence:
    """:func:`find_beam_divergence` of two searches whose returned rows (their
    :meth:`~diag.generation.result.GenerateResult.generated` tokens) are read already."""
    ref = _Search(reference, names[0], reference_rows)
    oth = _Search(other, names[1], other_rows)
    if (ref.batch, ref.beams) != (oth.batch, oth.beams):
        raise ValueError(
            f"{names[0]} ran {ref.batch} prompt(s) x {ref.beams} beams, {names[1]} "
            f"{oth.batch} x {oth.beams}: compare searches of the same prompts and num_beams."
        )
    chosen = range(ref.batch) if prompts is None else list(prompts)
    found = {p: _prompt_divergence(ref, oth, p, names) for p in chosen}
    per_prompt = [found[p][0] if found.get(p) else None for p in range(ref.batch)]
    shorter = min(len(ref), len(oth))
    largest = {
        p: max(_logit_diffs(ref, oth, p, found[p][4] if found[p] else shorter), default=None)
        for p in chosen
    }
    # a prompt whose decisions all agree may still return other sequences: its finished
    # hypotheses ranked the other way (length-penalised scores that tied)
    each = {
        p: _prompt_report(ref, oth, p, found[p], names, tokenizer, dtype, quantized_bits, largest[p])
        for p in chosen
        if found[p] or ref.returns_other(oth, p)
    }  # fmt: skip
    overall = max((d for d in largest.values() if d is not None), default=None)
    if not each:
        first = ref.returned[chosen[0] * ref.per_return] if chosen else []
        return Divergence(
            step=None, batch_index=None, num_steps=max(len(ref), len(oth)),
            reference=names[0], other=names[1], num_beams=ref.beams, largest_diff=overall,
            reference_tokens=first,
            other_tokens=oth.returned[chosen[0] * oth.per_return] if chosen else [],
            per_row=per_prompt,
        )  # fmt: skip
    if any(found.values()):
        prompt = min((f[0], p) for p, f in found.items() if f)[1]
    else:
        prompt = min(each)
        per_prompt[prompt] = each[prompt].step
    return replace(
        each[prompt], per_row=per_prompt, largest_diff=overall,
        row_divergences=[each[p] for p in sorted(each)],
    )  # fmt: skip


def _prompt_report(
    ref: _Search,
    oth: _Search,
    prompt: int,
    found: tuple[int, str, Any, Any, int] | None,
    names: tuple[str, str],
    tokenizer: Any,
    dtype: torch.dtype | None,
    quantized_bits: int | None,
    largest: float | None,
) -> Divergence:
    """The :class:`~diag.diagnose.divergence.Divergence` of ``prompt`` alone, whose
    first differing decision is ``found`` (None: its decisions agree, its returned
    sequences do not)."""
    common = dict(reference=names[0], other=names[1], num_beams=ref.beams, largest_diff=largest)
    if found is None:
        return _ranking_divergence(ref, oth, prompt, dtype, names, common)
    step, what, a, b, _ = found
    rows = ref.rows(prompt)
    diffs = _logit_diffs(ref, oth, prompt, step + 1) if a is not None else []
    score_diffs = [_score_diff(ref, oth, t, prompt) for t in range(step + 1)]
    noise = max(score_diffs[:-1]) if step > 0 else score_diffs[-1]
    candidates = []
    ref_margin = other_margin = near_tie = verdict = None
    if a is not None and b is not None:
        running = what.startswith("the hypotheses")

        def candidate(choice: tuple[int, int]) -> BeamCandidate:
            return BeamCandidate(
                row=choice[0], token_id=choice[1], text=token_text(tokenizer, choice[1]),
                reference_score=ref.score(step, choice), other_score=oth.score(step, choice),
                reference_slot=_slot(choice, ref, step, prompt, running),
                other_slot=_slot(choice, oth, step, prompt, running),
            )  # fmt: skip

        candidates = [candidate(a), candidate(b)]
        ca, cb = candidates
        if None not in (ca.reference_score, cb.reference_score, ca.other_score, cb.other_score):
            ref_margin = ca.reference_score - cb.reference_score
            other_margin = cb.other_score - ca.other_score
        if diffs and ref_margin is not None and noise is not None:
            near_tie, verdict = near_tie_verdict(
                ref.result.logits[step][rows], ref_margin, other_margin,
                float(torch.tensor(diffs[:-1]).median()) if step > 0 else None, diffs[-1],
                names, dtype, quantized_bits=quantized_bits, margin_noise=noise,
            )  # fmt: skip
    else:
        verdict = (
            "the searches stop at different steps: one judged that no running hypothesis "
            "could beat its finished ones any more; compare their sequences_scores"
        )
    source = a[0] if a is not None else prompt * ref.beams
    best = prompt * ref.per_return
    per_prompt: list[int | None] = [step if p == prompt else None for p in range(ref.batch)]
    return Divergence(
        step=step, batch_index=prompt, num_steps=step,
        reference_token=a[1] if a is not None else None,
        other_token=b[1] if b is not None else None,
        reference_margin=ref_margin, other_margin=other_margin,
        max_abs_diff=diffs[-1] if diffs else None,
        typical_diff=float(torch.tensor(diffs[:-1]).median()) if len(diffs) > 1 else None,
        near_tie=near_tie, verdict=verdict,
        common_prefix=ref.hypotheses(step)[source],
        reference_tokens=ref.returned[best], other_tokens=oth.returned[best], per_row=per_prompt,
        hypotheses=candidates, score_noise=noise, what=what, **common,
    )  # fmt: skip


def _ranking_divergence(
    ref: _Search,
    oth: _Search,
    prompt: int,
    dtype: torch.dtype | None,
    names: tuple[str, str],
    common: dict[str, Any],
) -> Divergence:
    """Both searches decided alike at every step, yet return other sequences for
    ``prompt``: their finished hypotheses ranked the other way (length-penalised
    scores); a near tie when the scores of the two sides' first differing returned
    sequences are within ``NEAR_TIE_FACTOR`` times the score noise."""
    rows_a, rows_b = ref.returned, oth.returned
    r = next(r for r in range(prompt * ref.per_return, (prompt + 1) * ref.per_return)
             if first_divergent_step(rows_a[r], rows_b[r]) is not None)  # fmt: skip
    step = first_divergent_step(rows_a[r], rows_b[r])
    per_prompt: list[int | None] = [step if p == prompt else None for p in range(ref.batch)]
    noise = max(
        (
            d
            for t in range(min(len(ref), len(oth)))
            if (d := _score_diff(ref, oth, t, prompt)) is not None
        ),
        default=None,
    )
    ref_score = float(ref.result.sequences_scores[r])
    other_score = float(oth.result.sequences_scores[r])
    gap = abs(ref_score - other_score)
    near_tie = (
        None
        if noise is None
        else gap <= NEAR_TIE_FACTOR * max(noise, torch.finfo(dtype or torch.float32).eps)
    )
    verdict = (
        f"the same hypotheses at every step, their finished ones ranked the other way: "
        f"returned scores {ref_score:.6g} ({names[0]}) and {other_score:.6g} ({names[1]})"
        + ("" if near_tie is None else ", a near tie (benign)" if near_tie else ", not a near tie")
    )
    return Divergence(
        step=step, batch_index=prompt, num_steps=step,
        reference_token=rows_a[r][step] if step < len(rows_a[r]) else None,
        other_token=rows_b[r][step] if step < len(rows_b[r]) else None,
        near_tie=near_tie, verdict=verdict, common_prefix=rows_a[r][:step],
        reference_tokens=rows_a[r], other_tokens=rows_b[r], per_row=per_prompt,
        score_noise=noise, what="the finished hypotheses returned differ", **common,
    )  # fmt: skip


__all__ = ["find_beam_divergence"]
