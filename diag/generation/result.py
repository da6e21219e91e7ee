"""What a generation returns when asked for more than the tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class GenerateResult:
    """Tokens, per-step scores, per-row finish reasons, counts and timings.

    ``sequences`` is what ``model.generate`` returns (prompt + new tokens, finished
    rows filled with the pad id); ``new_tokens`` is its new part. ``scores`` (when
    ``output_scores``) holds one ``[batch, vocab]`` tensor per step, the processed
    scores, like transformers' ``scores``; ``logits`` (when ``output_logits``) the raw
    ones. ``finish_reasons[i]`` is ``"stop"`` (row i produced an eos) or ``"length"``
    (it reached ``max_new_tokens``).

    Example::

        res = diag.generate(model, ids, max_new_tokens=20, return_result=True)
        res.finish_reasons, res.num_generated_tokens, res.decode_tokens_per_second
    """

    sequences: torch.Tensor
    num_prompt_tokens: int
    num_generated_tokens: list[int]
    finish_reasons: list[str]
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    #: number of forward calls made by the backend (prefill included)
    num_steps: int = 0
    #: beam search only: the score of each returned hypothesis ``[rows]`` (its summed
    #: log-probabilities over ``generated ** length_penalty``), as ``model.generate``'s
    #: ``sequences_scores``
    sequences_scores: torch.Tensor | None = None
    #: beam search only: ``[rows, generated]``, the row of the batch each token of a
    #: hypothesis continued at its step (-1 after its end), ``model.generate``'s
    #: ``beam_indices``
    beam_indices: torch.Tensor | None = None
    #: beam search only: what each step decided (:class:`~diag.generation.beam_search.BeamStep`:
    #: the rows that go on, their tokens and scores, the candidates that may end), the
    #: trace :mod:`diag.diagnose.beams` compares two searches by
    beam_steps: tuple[Any, ...] | None = None

    @property
    def new_tokens(self) -> torch.Tensor:
        """The generated part ``[batch, steps]`` (pad after a row's eos)."""
        return self.sequences[:, self.num_prompt_tokens :]

    @property
    def batch_size(self) -> int:
        return int(self.sequences.shape[0])

    @property
    def total_seconds(self) -> float:
        return self.prefill_seconds + self.decode_seconds

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens (all rows) per second, prefill included."""
        total = self.total_seconds
        return sum(self.num_generated_tokens) / total if total > 0 else float("nan")

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens produced by the decode calls (after the prefill) per second."""
        # the prefill produced the first token of every row
        produced = sum(max(n - 1, 0) for n in self.num_generated_tokens)
        return produced / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    def generated(self) -> list[list[int]]:
        """The generated tokens of each row: its eos included, the padding after it not.

        >>> GenerateResult(torch.tensor([[7, 8, 2, 0], [7, 9, 9, 9]]), 1, [2, 3],
        ...                ["stop", "length"]).generated()
        [[8, 2], [9, 9, 9]]
        """
        return [
            self.new_tokens[i, : self.num_generated_tokens[i]].tolist()
            for i in range(self.batch_size)
        ]

    def row_logits(self) -> list[list[torch.Tensor]]:
        """The ``[vocab]`` raw logits of every step of each returned row (``logits``
        kept): a beam search's hypothesis reads, at each step, the logits of the row it
        continued then (``beam_indices``).

        >>> r = GenerateResult(torch.tensor([[7, 8]]), 1, [1], ["length"],
        ...                    logits=(torch.tensor([[0.5, 2.0]]),))
        >>> r.row_logits()
        [[tensor([0.5000, 2.0000])]]
        """
        if self.logits is None:
            raise ValueError("this result kept no logits: generate with output_logits=True.")
        if self.beam_indices is None:
            return [[step[r] for step in self.logits] for r in range(self.batch_size)]
        return [
            [self.logits[t][int(self.beam_indices[r, t])] for t in range(n)]
            for r, n in enumerate(self.num_generated_tokens)
        ]

    def texts(self, tokenizer, skip_special_tokens: bool = True) -> list[str]:
        """The generated text of each row (prompt excluded, padding dropped)."""
        return tokenizer.batch_decode(self.generated(), skip_special_tokens=skip_special_tokens)
