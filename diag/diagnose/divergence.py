"""The first step where two generations stop choosing the same tokens, and why.

Two sides generate from the same prompt: torch and ONNX in
:func:`~diag.diagnose.free_running.first_divergence`, ``model.generate`` and each diag
backend in ``python -m diag compare``. Their raw logits are kept at every step. The
first position where the two token streams differ is the divergence; at that step both
sides had read exactly the same tokens, so their logits are comparable and tell why
they chose differently:

* each side's top-k candidates, with their logits;
* each side's *margin*, the gap between its best and second best logit
  (:func:`diag.diagnose.metrics.margin`);
* a verdict (:func:`near_tie_verdict`). The *usual difference* between the sides is
  the median max absolute logits difference on the steps before, where the tokens
  agreed (the difference at the divergence step itself when it is the first step).
  When that difference is more than :data:`NOISE_RTOL` (1%, or ten units of the
  dtype's eps in bfloat16: :func:`noise_rtol`) of the logits' scale, no
  rounding explains it: the two sides compute something else. Otherwise, when both
  margins are within :data:`NEAR_TIE_FACTOR` times the usual difference, the models
  hesitated between two tokens and rounding picked another one: a near tie, benign
  (frequent in float16). When the margins are larger, the other side is suspect,
  unless it is a quantized model (``quantized_bits``): its weights move the logits by
  more than rounding by design, and the verdict says the divergence is the expected
  quantization error.

:func:`find_divergence` makes the :class:`Divergence` of two generations already made
(their tokens and logits).

Example::

    div = find_divergence(ref_rows, other_rows, ref_logits, other_logits, names=("hf", "onnx"))
    print(div)        # readable report
    div.step          # None when the token streams agree
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from diag.diagnose.metrics import margin, max_abs_diff
from diag.diagnose.token_text import shown_token, token_text
from diag.helpers.wrap import wrap_report

#: a divergence is called a near tie when both margins stay below this multiple of the
#: usual logits difference between the sides
NEAR_TIE_FACTOR = 10.0
#: a usual difference above this fraction of the logits' scale (max |logit| of the
#: reference) is more than rounding: float32 stays near 1e-6, float16 near 1e-3
NOISE_RTOL = 1e-2
#: ... or above this many units of the dtype's eps, when that is larger: bfloat16 (eps
#: 7.8e-3, 8 bits of mantissa) rounds each value by up to 0.4% and a deep model adds up
#: such errors
NOISE_EPS_FACTOR = 10.0


def noise_rtol(dtype: torch.dtype | None = None) -> float:
    """The fraction of the logits' scale rounding in ``dtype`` stays within:
    :data:`NOISE_RTOL`, or :data:`NOISE_EPS_FACTOR` units of ``dtype``'s eps when larger
    (bfloat16). None: float32.

    >>> noise_rtol(torch.float16), round(noise_rtol(torch.bfloat16), 4)
    (0.01, 0.0781)
    """
    if dtype is None or not dtype.is_floating_point:
        return NOISE_RTOL
    return max(NOISE_RTOL, NOISE_EPS_FACTOR * torch.finfo(dtype).eps)


@dataclass
class Candidate:
    """One of the best tokens of a side at the divergence step."""

    token_id: int
    logit: float
    text: str | None = None

    def __str__(self) -> str:
        return f"{shown_token(self.token_id, self.text)} ({self.logit:.4g})"


@dataclass
class BeamCandidate:
    """A candidate of a beam search step (hypothesis ``row`` extended by ``token_id``)
    that the two sides of a :class:`Divergence` ranked differently: its score on each
    side (summed log-probabilities) and the place each gave it (``*_slot``: the
    running row it became or, for one that ends, its rank among the first
    ``num_beams`` candidates; None: that side did not choose it)."""

    row: int
    token_id: int
    text: str | None = None
    reference_score: float | None = None
    other_score: float | None = None
    reference_slot: int | None = None
    other_slot: int | None = None

    def describe(self) -> str:
        return f"row {self.row} + {shown_token(self.token_id, self.text)}"


@dataclass
class Divergence:
    """Where (and why) two token streams first differ; see :func:`find_divergence`.

    ``step`` is None when the streams agree (the object is then falsy). Steps count the
    new tokens: step 0 is the token chosen from the prefill logits. The ``reference_*``
    fields describe the side named ``reference``, the ``other_*`` fields the side named
    ``other`` (torch and onnx in :func:`~diag.diagnose.free_running.first_divergence`).
    """

    #: first differing step, None when both generated the same tokens
    step: int | None
    #: the batch row where it happens first (the lowest row among the earliest)
    batch_index: int | None
    #: number of steps compared: the shorter stream's length for that row (the longest
    #: stream when the streams agree)
    num_steps: int
    #: names of the two sides
    reference: str = "torch"
    other: str = "onnx"
    #: tokens each side chose at ``step`` (None: that side had stopped)
    reference_token: int | None = None
    other_token: int | None = None
    reference_text: str | None = None
    other_text: str | None = None
    #: the top-k candidates of each side at ``step`` (empty without its logits)
    reference_top: list[Candidate] = field(default_factory=list)
    other_top: list[Candidate] = field(default_factory=list)
    #: best minus second best logit, each side
    reference_margin: float | None = None
    other_margin: float | None = None
    #: ``max |logits reference - logits other|`` at ``step``
    max_abs_diff: float | None = None
    #: median of that difference over the steps before (where the tokens agreed)
    typical_diff: float | None = None
    #: the largest ``max |logits difference|`` over the steps where both sides had read the
    #: same tokens: every row's steps up to its own divergence included, all its steps
    #: when it agrees; None without logits
    largest_diff: float | None = None
    #: True: a near tie, benign rounding; False: the other side is suspect (see
    #: ``verdict``); None when a side has no logits at ``step``
    near_tie: bool | None = None
    #: the explanation of ``near_tie``, one sentence
    verdict: str | None = None
    #: the tokens both generated before ``step`` (row ``batch_index``)
    common_prefix: list[int] = field(default_factory=list)
    #: the whole new-token streams of row ``batch_index`` (row 0 when no divergence)
    reference_tokens: list[int] = field(default_factory=list)
    other_tokens: list[int] = field(default_factory=list)
    #: first differing step of every batch row (None for rows that agree); of every
    #: prompt in a beam search
    per_row: list[int | None] = field(default_factory=list)
    #: beam search (:mod:`diag.diagnose.beams`): the hypotheses per prompt (1: greedy or
    #: sampling, the fields below unused); ``batch_index`` is then the prompt, the
    #: margins the gap each side puts between its choice and the other's
    num_beams: int = 1
    #: beam search: the candidates the two sides ranked differently at ``step``, the
    #: reference's choice first (empty when a side's search stopped)
    hypotheses: list[BeamCandidate] = field(default_factory=list)
    #: beam search: the usual difference between the sides' scores of the same
    #: candidate on the agreeing steps before (at this step when it is the first)
    score_noise: float | None = None
    #: beam search: what differs, one phrase ("the hypotheses chosen", ...)
    what: str | None = None
    #: the divergence of each row that differs (of each prompt, in a beam search), in
    #: row order, each as if its row were compared alone: what a report per row shows
    row_divergences: list[Divergence] = field(default_factory=list, repr=False)

    @property
    def diverged(self) -> bool:
        return self.step is not None

    def __bool__(self) -> bool:
        return self.diverged

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings), e.g. for ``json.dumps``."""
        return asdict(self)

    def __str__(self) -> str:
        ref, other = self.reference, self.other
        if self.step is None and self.num_beams > 1:
            prompts = f" of each of {len(self.per_row)} prompts" if len(self.per_row) > 1 else ""
            return (
                f"no divergence: {ref} and {other} made the same decisions at the "
                f"{self.num_steps} steps of a beam search of {self.num_beams} hypotheses{prompts}"
            )
        if self.step is None:
            rows = f" in all {len(self.per_row)} rows" if len(self.per_row) > 1 else ""
            return (
                f"no divergence: {ref} and {other} generated the same {self.num_steps} tokens{rows}"
            )
        row = f" (batch row {self.batch_index})" if len(self.per_row) > 1 else ""
        width = max(len(ref), len(other))
        if self.num_beams > 1:
            return wrap_report("\n".join(self._beam_lines(width)))

        def chose(name: str, token: int | None, text: str | None, gap: float | None) -> str:
            if token is None:
                return f"  {name:<{width}} stopped"
            gap_text = "logits not available" if gap is None else f"{gap:.4g}"
            return f"  {name:<{width}} chose {shown_token(token, text)} (margin over its 2nd: {gap_text})"

        def top(name: str, candidates: list[Candidate]) -> str:
            listed = " | ".join(str(c) for c in candidates) or "logits not available"
            return f"  {name:<{width}} top: {listed}"

        lines = [
            f"first divergence at step {self.step}{row}, after {len(self.common_prefix)} identical tokens",
            chose(ref, self.reference_token, self.reference_text, self.reference_margin),
            chose(other, self.other_token, self.other_text, self.other_margin),
        ]
        if self.max_abs_diff is not None:
            lines.append(
                f"  max |logits {ref} - {other}| at this step: {self.max_abs_diff:.3g}"
                + (
                    f" (typical before: {self.typical_diff:.3g})"
                    if self.typical_diff is not None
                    else ""
                )
            )
        lines += [top(ref, self.reference_top), top(other, self.other_top)]
        if self.verdict:
            lines.append(f"  verdict: {self.verdict}")
        return wrap_report("\n".join(lines))

    def _beam_lines(self, width: int) -> list[str]:
        """The report of a beam search's divergence (see :mod:`diag.diagnose.beams`)."""
        ref, other = self.reference, self.other
        prompt = f" (prompt {self.batch_index})" if len(self.per_row) > 1 else ""
        lines = [
            f"first divergence at step {self.step}{prompt}, beam search of {self.num_beams} "
            f"hypotheses: {self.what}, after {self.step} identical steps"
        ]

        def score(value: float | None) -> str:
            return "-" if value is None else f"{value:.6g}"

        for c in self.hypotheses:
            chosen = [
                n for n, s in ((ref, c.reference_slot), (other, c.other_slot)) if s is not None
            ]
            who = " and ".join(chosen) or "neither"
            lines.append(
                f"  {c.describe()}: chosen by {who}; score {ref} {score(c.reference_score)}, "
                f"{other} {score(c.other_score)}"
            )
        if self.reference_margin is not None and self.other_margin is not None:
            lines.append(
                f"  {ref:<{width}} ranks its choice {self.reference_margin:.4g} above {other}'s"
            )
            lines.append(
                f"  {other:<{width}} ranks its choice {self.other_margin:.4g} above {ref}'s"
            )
        if self.score_noise is not None:
            when = "on the steps before" if self.step else "at this first step"
            lines.append(
                f"  largest |score {ref} - {other}| of a candidate {when}: {self.score_noise:.3g}"
            )
        if self.max_abs_diff is not None:
            typical = (
                f" (typical before: {self.typical_diff:.3g})"
                if self.typical_diff is not None
                else ""
            )
            lines.append(
                f"  max |logits {ref} - {other}| at this step: {self.max_abs_diff:.3g}{typical}"
            )
        if self.verdict:
            lines.append(f"  verdict: {self.verdict}")
        return lines


def first_divergent_step(reference: Sequence[int], other: Sequence[int]) -> int | None:
    """Index of the first new token where ``other`` differs from ``reference``, None if
    they are equal. A stream that stops earlier (eos) differs at its end.

    >>> first_divergent_step([5, 6, 7], [5, 6, 8]), first_divergent_step([5, 6], [5, 6])
    (2, None)
    >>> first_divergent_step([1, 2, 3], [1, 2])
    2
    """
    for step, (a, b) in enumerate(zip(reference, other, strict=False)):
        if a != b:
            return step
    if len(reference) != len(other):
        return min(len(reference), len(other))
    return None


def top_candidates(logits: torch.Tensor, k: int = 5, tokenizer: Any = None) -> list[Candidate]:
    """The ``k`` tokens with the largest logits in ``logits`` ``[vocab]``, best first,
    with their text when a ``tokenizer`` is given.

    >>> [c.token_id for c in top_candidates(torch.tensor([0.5, 3.0, 1.0]), k=2)]
    [1, 2]
    """
    values, ids = logits.float().topk(min(k, logits.shape[-1]))
    return [
        Candidate(int(i), float(v), token_text(tokenizer, i))
        for i, v in zip(ids.tolist(), values.tolist(), strict=True)
    ]


def near_tie_verdict(
    reference_logits: torch.Tensor,
    reference_margin: float,
    other_margin: float,
    typical_diff: float | None,
    step_diff: float,
    names: tuple[str, str] = ("torch", "onnx"),
    dtype: torch.dtype | None = None,
    quantized_bits: int | None = None,
    margin_noise: float | None = None,
) -> tuple[bool, str]:
    """``(near_tie, explanation)`` of a divergence, the rule of the module docstring.

    ``typical_diff`` is the usual difference on the agreeing steps before (None at the
    first step: ``step_diff``, the difference at the divergence step, stands for it).
    ``dtype``: the narrowest dtype the sides compute in (None: float32), which sets how
    large a difference rounding explains (:func:`noise_rtol`).
    ``quantized_bits``: the other side is a model quantized to that many bits (its
    metadata says so); a difference beyond rounding is then its expected error.
    ``margin_noise``: the usual difference of the quantities the margins gap (None:
    the logits', ``typical_diff``); a beam search's margins are gaps between summed
    log-probabilities, whose rounding adds up over the steps
    (:mod:`diag.diagnose.beams`).

    >>> near_tie_verdict(torch.tensor([5.0, 5.0 - 1e-6]), 1e-6, 2e-6, 1e-6, 3e-6)[0]
    True
    >>> near_tie_verdict(torch.tensor([5.0, 1.0]), 4.0, 3.0, 1e-6, 5.0)[1][:19]
    'not a near tie, a m'
    >>> near_tie_verdict(torch.tensor([5.0, 1.0]), 0.2, 0.1, 0.3, 0.3, quantized_bits=4)[1][:34]
    'expected int4 quantization error, '
    """
    ref, other = names
    noise = typical_diff if typical_diff is not None else step_diff
    where = "on the agreeing steps before" if typical_diff is not None else "at this first step"
    gap_noise = noise if margin_noise is None else margin_noise
    scale = max(1.0, float(reference_logits.float().abs().max()))
    suspect = (
        f"{other} computes something different from {ref}"
        " (see compare_teacher_forced and localize_layer)"
    )
    if quantized_bits is not None and (
        noise > noise_rtol(dtype) * scale
        or max(reference_margin, other_margin) > NEAR_TIE_FACTOR * gap_noise
    ):
        return False, (
            f"expected int{quantized_bits} quantization error, not a broken export: "
            f"{other}'s quantized weights move the logits by {noise:.3g} {where} "
            f"({noise / scale:.1%} of their scale {scale:.3g}), which flipped a choice whose "
            f"margin was {reference_margin:.3g} in {ref} (quantization_report measures how "
            "often it does)"
        )
    if noise > noise_rtol(dtype) * scale:
        return False, (
            f"not rounding, the logits differ by {noise:.3g} {where}, {noise / scale:.1%} of "
            f"their scale ({scale:.3g}); {suspect}"
        )
    if max(reference_margin, other_margin) <= NEAR_TIE_FACTOR * gap_noise:
        return True, (
            f"near tie, both margins are within {NEAR_TIE_FACTOR:g}x the usual difference "
            f"between {ref} and {other} ({gap_noise:.3g}); rounding chose another token (benign)"
        )
    return False, (
        f"not a near tie, a margin is far above the usual difference between {ref} and "
        f"{other} ({gap_noise:.3g}); {suspect} at this step"
    )


def _step_logits(logits: Sequence[torch.Tensor] | None, step: int, row: int) -> torch.Tensor | None:
    if logits is None or step >= len(logits):
        return None
    return logits[step][row]


def _row_diffs(
    reference_logits: Sequence[torch.Tensor],
    other_logits: Sequence[torch.Tensor],
    row: int,
    steps: int,
) -> list[float]:
    """max |difference| of row ``row`` at each of the first ``steps`` steps both sides have."""
    steps = min(steps, len(reference_logits), len(other_logits))
    return [
        float(max_abs_diff(reference_logits[s][row], other_logits[s][row])) for s in range(steps)
    ]


def find_divergence(
    reference_tokens: Sequence[Sequence[int]],
    other_tokens: Sequence[Sequence[int]],
    reference_logits: Sequence[torch.Tensor] | None = None,
    other_logits: Sequence[torch.Tensor] | None = None,
    *,
    names: tuple[str, str] = ("torch", "onnx"),
    tokenizer: Any = None,
    num_candidates: int = 5,
    dtype: torch.dtype | None = None,
    quantized_bits: int | None = None,
) -> Divergence:
    """The first :class:`Divergence` between two generations that are already made.

    :param reference_tokens: the new tokens of every row of the reference side, each row
        up to its end (eos included)
    :param other_tokens: the same for the other side, as many rows
    :param reference_logits: the raw logits of every step, ``[rows, vocab]`` each (what
        ``output_logits=True`` keeps); None when not kept: the report then has the
        tokens only
    :param other_logits: the same for the other side
    :param names: the names of the two sides in the report
    :param tokenizer: adds the text of the tokens to the report
    :param num_candidates: number of candidates reported per side
    :param dtype: the narrowest float dtype of the two sides (None: float32): float16
        and bfloat16 round more, the verdict allows for it (:func:`noise_rtol`)
    :param quantized_bits: the other side is quantized to that many bits: a difference
        beyond rounding is its expected error (see :func:`near_tie_verdict`)
    :return: a :class:`Divergence`, falsy when both streams agree

    Example (two :class:`~diag.generation.result.GenerateResult` made with
    ``output_logits=True``)::

        rows = lambda r: [r.new_tokens[i, :n].tolist()
                          for i, n in enumerate(r.num_generated_tokens)]
        div = find_divergence(rows(a), rows(b), a.logits, b.logits, names=("a", "b"))

    Two sides that hesitate between tokens 1 and 2 at step 1 (logits of 3 tokens):

    >>> ref = [torch.tensor([[0.0, 5.0, 1.0]]), torch.tensor([[0.0, 2.0005, 2.0]])]
    >>> other = [torch.tensor([[0.0, 5.001, 1.0]]), torch.tensor([[0.0, 1.9995, 2.0]])]
    >>> div = find_divergence([[1, 1]], [[1, 2]], ref, other, names=("hf", "onnx"))
    >>> div.step, div.common_prefix, div.near_tie
    (1, [1], True)
    >>> print(str(div).splitlines()[0])
    first divergence at step 1, after 1 identical tokens
    """
    if len(reference_tokens) != len(other_tokens):
        raise ValueError(
            f"the two sides have {len(reference_tokens)} and {len(other_tokens)} rows; "
            "compare generations of the same prompts."
        )
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}.")
    streams = [(list(a), list(b)) for a, b in zip(reference_tokens, other_tokens, strict=True)]
    per_row = [first_divergent_step(a, b) for a, b in streams]
    row_largest: list[float | None] = [None] * len(streams)
    logits_kept = reference_logits is not None and other_logits is not None
    if logits_kept:
        row_largest = [
            max(_row_diffs(reference_logits, other_logits, row, min(len(a), len(b)) if step is None else step + 1), default=0.0)
            for row, ((a, b), step) in enumerate(zip(streams, per_row, strict=True))
        ]  # fmt: skip
    largest = max(row_largest, default=0.0) if logits_kept else None
    found = [(s, r) for r, s in enumerate(per_row) if s is not None]
    if not found:
        a, b = streams[0] if streams else ([], [])
        return Divergence(
            step=None,
            batch_index=None,
            num_steps=max((len(x) for x, _ in streams), default=0),
            reference=names[0],
            other=names[1],
            largest_diff=largest,
            reference_tokens=a,
            other_tokens=b,
            per_row=per_row,
        )
    each = {
        row: _row_divergence(
            *streams[row], step, row, reference_logits, other_logits, names, tokenizer,
            num_candidates, dtype, quantized_bits, largest_diff=row_largest[row],
        )
        for step, row in sorted(found, key=lambda f: f[1])
    }  # fmt: skip
    first = each[min(found)[1]]
    return replace(
        first, per_row=per_row, largest_diff=largest, row_divergences=list(each.values())
    )


def _row_divergence(
    a: list[int],
    b: list[int],
    step: int,
    row: int,
    reference_logits: Sequence[torch.Tensor] | None,
    other_logits: Sequence[torch.Tensor] | None,
    names: tuple[str, str],
    tokenizer: Any,
    num_candidates: int,
    dtype: torch.dtype | None,
    quantized_bits: int | None,
    largest_diff: float | None,
) -> Divergence:
    """The :class:`Divergence` of row ``row`` alone, whose streams ``a`` and ``b`` first
    differ at ``step``: its tokens, top candidates, margins and verdict."""
    ref_step = _step_logits(reference_logits, step, row)
    other_step = _step_logits(other_logits, step, row)
    ref_margin = float(margin(ref_step.double())) if ref_step is not None else None
    other_margin = float(margin(other_step.double())) if other_step is not None else None
    step_diff = typical = near_tie = verdict = None
    if ref_step is not None and other_step is not None:
        diffs = _row_diffs(reference_logits, other_logits, row, step + 1)
        step_diff = diffs[-1]
        typical = float(torch.tensor(diffs[:-1]).median()) if step > 0 else None
        near_tie, verdict = near_tie_verdict(
            ref_step, ref_margin, other_margin, typical, step_diff, names, dtype,
            quantized_bits=quantized_bits,
        )  # fmt: skip
    ref_token = a[step] if step < len(a) else None
    other_token = b[step] if step < len(b) else None

    def top(logits: torch.Tensor | None) -> list[Candidate]:
        return [] if logits is None else top_candidates(logits, num_candidates, tokenizer)

    return Divergence(
        step=step,
        batch_index=row,
        num_steps=min(len(a), len(b)),
        reference=names[0],
        other=names[1],
        reference_token=ref_token,
        other_token=other_token,
        reference_text=token_text(tokenizer, ref_token),
        other_text=token_text(tokenizer, other_token),
        reference_top=top(ref_step),
        other_top=top(other_step),
        reference_margin=ref_margin,
        other_margin=other_margin,
        max_abs_diff=step_diff,
        typical_diff=typical,
        largest_diff=largest_diff,
        near_tie=near_tie,
        verdict=verdict,
        common_prefix=a[:step],
        reference_tokens=a,
        other_tokens=b,
        per_row=[step],
    )


__all__ = [
    "NEAR_TIE_FACTOR",
    "NOISE_EPS_FACTOR",
    "NOISE_RTOL",
    "Candidate",
    "Divergence",
    "find_divergence",
    "first_divergent_step",
    "near_tie_verdict",
    "noise_rtol",
    "top_candidates",
]
