"""Token parity between two generations, and what the models saw where they part.

When a backend chooses another token than the reference, the first step where they
differ tells where to look, and the top candidates of both sides at that step tell why:
two candidates with almost the same logit (a near tie) flip on tiny numerical
differences, a large gap points at a real bug.

Example::

    >>> first_divergent_step([5, 6, 7], [5, 6, 8]), first_divergent_step([5, 6], [5, 6])
    (2, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def first_divergent_step(reference: list[int], other: list[int]) -> int | None:
    """Index of the first new token where ``other`` differs from ``reference``, None if
    they are equal. A sequence that stops earlier differs at its end.

    >>> first_divergent_step([1, 2, 3], [1, 2])
    2
    """
    for step, (a, b) in enumerate(zip(reference, other, strict=False)):
        if a != b:
            return step
    if len(reference) != len(other):
        return min(len(reference), len(other))
    return None


@dataclass
class Candidate:
    """A token the model could choose and its raw logit."""

    token_id: int
    text: str
    logit: float

    def format(self) -> str:
        return f"{self.text!r} ({self.token_id}) {self.logit:.4f}"


def top_candidates(logits: torch.Tensor, tokenizer: Any, k: int = 5) -> list[Candidate]:
    """The ``k`` tokens with the largest logits in ``logits`` ``[vocab]``, best first."""
    values, indices = torch.topk(logits.float(), min(k, logits.shape[-1]))
    return [
        Candidate(int(i), tokenizer.decode([int(i)]), float(v))
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


@dataclass
class Divergence:
    """Where ``backend`` first chose another token than ``reference`` for one prompt."""

    reference: str
    backend: str
    prompt_index: int
    step: int
    #: the token each side chose there (None: that side had stopped)
    reference_token: int | None
    backend_token: int | None
    reference_top: list[Candidate]
    backend_top: list[Candidate]

    @property
    def reference_margin(self) -> float | None:
        """Logit gap between the reference's two best candidates (small = near tie)."""
        if len(self.reference_top) < 2:
            return None
        return self.reference_top[0].logit - self.reference_top[1].logit

    def format(self) -> str:
        """A few lines that say where and between which candidates the sides part."""
        lines = [
            f"{self.backend} diverges from {self.reference} on prompt {self.prompt_index + 1} "
            f"at step {self.step} (new token #{self.step + 1})"
        ]
        width = max(len(self.reference), len(self.backend))
        for name, token, top in (
            (self.reference, self.reference_token, self.reference_top),
            (self.backend, self.backend_token, self.backend_top),
        ):
            chose = "stopped" if token is None else f"chose {token}"
            cands = ", ".join(c.format() for c in top) if top else "logits not available"
            lines.append(f"  {name:<{width}} {chose}; top candidates: {cands}")
        margin = self.reference_margin
        if margin is not None:
            lines.append(
                f"  logit gap between the reference's two best candidates: {margin:.3g}"
                + (" (a near tie: numerical noise can flip it)" if margin < 1e-3 else "")
            )
        return "\n".join(lines)


def _step_logits(logits: list[torch.Tensor] | None, step: int, row: int) -> torch.Tensor | None:
    if logits is None or step >= len(logits):
        return None
    return logits[step][row]


def find_divergence(
    reference: Any,
    other: Any,
    tokenizer: Any,
    prompt_index: int = 0,
    row: int = 0,
    k: int = 5,
) -> Divergence | None:
    """Compares row ``row`` of two :class:`diag.cli.backends.Generation`; returns None when
    the tokens are equal, else the first :class:`Divergence` with the top ``k`` candidates
    of both sides (from their step logits, when they were kept)."""
    ref_tokens, other_tokens = reference.new_tokens[row], other.new_tokens[row]
    step = first_divergent_step(ref_tokens, other_tokens)
    if step is None:
        return None
    tops = []
    for gen in (reference, other):
        logits = _step_logits(gen.step_logits, step, row)
        tops.append([] if logits is None else top_candidates(logits, tokenizer, k))
    return Divergence(
        reference=reference.backend,
        backend=other.backend,
        prompt_index=prompt_index,
        step=step,
        reference_token=ref_tokens[step] if step < len(ref_tokens) else None,
        backend_token=other_tokens[step] if step < len(other_tokens) else None,
        reference_top=tops[0],
        backend_top=tops[1],
    )


def max_logit_diff(reference: Any, other: Any, row: int = 0, steps: int | None = None) -> float:
    """Largest absolute difference between the step logits of two generations over their
    first ``steps`` common steps (all common steps by default); NaN without logits."""
    if not reference.step_logits or not other.step_logits:
        return float("nan")
    n = min(len(reference.step_logits), len(other.step_logits))
    if steps is not None:
        n = min(n, steps)
    diff = 0.0
    for s in range(n):
        a, b = reference.step_logits[s][row], other.step_logits[s][row]
        diff = max(diff, float((a.float() - b.float()).abs().max()))
    return diff
