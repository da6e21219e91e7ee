"""Beam search: ``num_beams`` hypotheses per prompt, the token choice that
:mod:`diag.generation.decoding` runs when ``num_beams > 1``.

Each prompt owns ``num_beams`` rows of the batch, its *running* hypotheses; each has
a score, the sum of the log-probabilities of its tokens. At every step
(:meth:`BeamSearch.step`):

1. every running hypothesis is extended by every token of the vocabulary: its score
   plus the token's (processed) log-probability;
2. the best ``keep`` extensions of each prompt are its *candidates* (drawn from the
   softmax of those scores instead when sampling), ``keep`` being ``(1 + eos ids)
   * num_beams`` (at least ``2 * num_beams``), so that ``num_beams`` of them go on even
   when others end;
3. a candidate whose token is an eos, or which reaches the maximum length, ends: among
   the first ``num_beams`` candidates, these enter the prompt's *finished* hypotheses,
   scored ``score / generated_length ** length_penalty``, where the ``num_beams`` best
   are kept;
4. the best ``num_beams`` candidates that did not end are the next running
   hypotheses: ``BeamStep.rows`` says which row each continues, the loop reorders
   its token buffer and the backend its cache by it, and ``BeamStep.tokens`` is the
   token each appends.

A prompt is done when its running hypotheses can no longer beat its finished ones
(``early_stopping=False``: judged at the current length; ``"never"``: at the longest
length a positive length penalty could reach), or, with ``early_stopping=True``, as
soon as it holds ``num_beams`` finished hypotheses. The rules, the arithmetic and the
random draws are those of ``model.generate``, so that the same sequences and scores
come out.

Example::

    beams = BeamSearch(options, batch_size=1, prompt_length=5, fill=pad_id)
    step = beams.step(sequences[:, :length], log_probs)   # log_probs [num_beams, vocab]
    sequences = sequences[step.rows]; sequences[:, length] = step.tokens
    past = backend.reorder(past, step.rows)
    beams.finish()   # the best hypotheses, their scores and beam indices
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diag.compat.beam_search import beam_sample_sorts_draws
from diag.generation.options import DecodingOptions

#: the score of what must not be chosen (a hypothesis not started, a candidate that
#: ended, an empty slot): transformers' constant, kept so that the sums agree
NEVER = -1.0e9


@dataclass
class BeamStep:
    """What one beam search step decided for the running rows: ``tokens`` ``[rows]``,
    the token each row appends, and ``rows`` ``[rows]``, the row (before the step) it
    continues: the source rows of the reordering.

    The other fields let a reader replay the decision (:mod:`diag.diagnose.beams`
    compares two searches by them): ``scores`` ``[rows]``, the running score of each
    hypothesis after the step; ``candidate_rows`` / ``candidate_tokens`` /
    ``candidate_scores`` ``[batch, num_beams]``, the first ``num_beams`` candidates of
    each prompt (those that may end here), best first; ``open`` ``[batch]``, whether a
    prompt's finished hypotheses may still change after the step."""

    tokens: torch.Tensor
    rows: torch.Tensor
    scores: torch.Tensor | None = None
    candidate_rows: torch.Tensor | None = None
    candidate_tokens: torch.Tensor | None = None
    candidate_scores: torch.Tensor | None = None
    open: torch.Tensor | None = None


@dataclass
class Hypotheses:
    """The finished hypotheses :meth:`BeamSearch.finish` returns, best first per prompt:
    ``sequences`` ``[batch * n, prompt + generated]`` (filled after an early end),
    ``scores`` ``[batch * n]`` (length-penalised), ``beam_indices`` ``[batch * n,
    generated]`` (the row each token came from at its step, -1 after the end) and
    ``lengths``, the tokens each generated."""

    sequences: torch.Tensor
    scores: torch.Tensor
    beam_indices: torch.Tensor
    lengths: list[int]


def start_scores(
    batch_size: int, num_beams: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The running scores ``[batch, num_beams]`` before the first step: only the first
    hypothesis of each prompt is started (the others hold the same prompt: scored out,
    so that the first step does not pick one continuation ``num_beams`` times).

    >>> start_scores(1, 3).tolist()
    [[0.0, -1000000000.0, -1000000000.0]]
    """
    scores = torch.zeros((batch_size, num_beams), device=device)
    scores[:, 1:] = NEVER
    return scores


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor[b, index[b, j], ...]`` for each prompt ``b``: picks hypotheses along
    dimension 1 (``[batch, beams, ...]``)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


class BeamSearch:
    """The hypotheses of a beam search over ``batch_size`` prompts (see the module).

    ``fill`` is the token written after a hypothesis that ended early (transformers:
    the pad id, else the first eos). ``generator`` drives the draws of beam sampling
    (None: torch's global stream, as ``model.generate``).

    >>> beams = BeamSearch(DecodingOptions(num_beams=2, max_new_tokens=2), 1, 1, fill=0)
    >>> log_probs = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]))
    >>> step = beams.step(torch.tensor([[5], [5]]), log_probs)
    >>> step.tokens.tolist(), step.rows.tolist(), beams.done
    ([1, 2], [0, 0], False)
    """

    def __init__(
        self,
        options: DecodingOptions,
        batch_size: int,
        prompt_length: int,
        *,
        fill: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ):
        self.num_beams = beams = options.num_beams
        self.batch_size = batch_size
        self.prompt_length = prompt_length
        self.max_new = options.num_new_tokens(prompt_length)
        self.length_penalty = options.length_penalty
        self.early_stopping = options.early_stopping
        self.num_return_sequences = options.num_return_sequences
        self.do_sample = bool(options.do_sample)
        self.generator = generator
        self.fill = fill
        eos = options.eos_token_ids
        self.eos = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
        self.keep = max(2, 1 + len(eos)) * beams
        # running hypotheses: only the first of each prompt at the start
        self.running_scores = start_scores(batch_size, beams, device)
        self.running_origins = torch.full(
            (batch_size, beams, self.max_new), -1, dtype=torch.int32, device=device
        )
        # finished hypotheses: empty slots scored out
        self.finished_sequences: torch.Tensor | None = None
        self.finished_scores = torch.full((batch_size, beams), NEVER, device=device)
        self.finished_origins = self.running_origins.clone()
        self.is_finished = torch.zeros((batch_size, beams), dtype=torch.bool, device=device)
        #: per prompt: can a running hypothesis still beat the worst finished one?
        self.can_improve = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
        self.done = False
        # the first row of each prompt, to turn a beam of a prompt into a row
        self._first_rows = torch.arange(batch_size, device=device).view(-1, 1) * beams
        self._first_candidates = torch.arange(self.keep, device=device) < beams

    # ------------------------------------------------------------------ one step
    def step(self, sequences: torch.Tensor, log_probs: torch.Tensor) -> BeamStep:
        """One step: ``sequences`` ``[batch * num_beams, length]`` are the running
        hypotheses so far, ``log_probs`` ``[batch * num_beams, vocab]`` the processed
        log-probabilities of their next token. Returns which rows go on, with which
        token; updates the finished hypotheses and :attr:`done`."""
        batch, beams = self.batch_size, self.num_beams
        length = int(sequences.shape[1])
        generated = length - self.prompt_length  # tokens before this step's
        vocab = int(log_probs.shape[-1])
        if self.finished_sequences is None:
            total = self.prompt_length + self.max_new
            self.finished_sequences = torch.full(
                (batch, beams, total), self.fill, dtype=torch.long, device=sequences.device
            )
            self.finished_sequences[:, :, :length] = sequences.view(batch, beams, length)

        # 1. the score of every extension of every running hypothesis of a prompt
        totals = log_probs.view(batch, beams, vocab) + self.running_scores[:, :, None]
        totals = totals.reshape(batch, beams * vocab)

        # 2. the candidates: best `keep` extensions (or `keep` draws)
        scores, flat = self._candidates(totals)
        beam = flat // vocab  # the hypothesis each candidate extends
        tokens = flat % vocab
        rows = beam + self._first_rows  # ... as a row of the batch
        origins = _gather(self.running_origins, beam)
        origins[:, :, generated] = rows.to(origins.dtype)
        candidates = torch.full(
            (batch, self.keep, self.finished_sequences.shape[-1]),
            self.fill,
            dtype=torch.long,
            device=sequences.device,
        )
        candidates[:, :, :length] = sequences[rows.flatten()].view(batch, self.keep, length)
        candidates[:, :, length] = tokens

        # 3. the candidates that end here: an eos, or the last token allowed
        ends = torch.full_like(tokens, generated + 1 >= self.max_new, dtype=torch.bool)
        if self.eos is not None:
            ends = ends | torch.isin(tokens, self.eos)

        # 4. the next running hypotheses: the best candidates that go on
        going = scores + ends.to(torch.float32) * NEVER
        best = torch.topk(going, k=beams).indices
        self.running_scores = _gather(going, best)
        self.running_origins = _gather(origins, best)

        # 5. the finished hypotheses, then whether the search goes on
        self._finish_candidates(candidates, scores, origins, ends, generated + 1)
        self._update_done(generated + 1, ends)
        return BeamStep(
            tokens=_gather(tokens, best).flatten(),
            rows=_gather(rows, best).flatten(),
            scores=self.running_scores.flatten().clone(),
            candidate_rows=rows[:, :beams].clone(),
            candidate_tokens=tokens[:, :beams].clone(),
            candidate_scores=scores[:, :beams].clone(),
            open=self.can_improve.flatten() & ~self._finished_for_good(),
        )

    def _finished_for_good(self) -> torch.Tensor:
        """``[batch]``: the prompts whose finished hypotheses can no longer change (every
        slot taken and ``early_stopping=True``)."""
        return self.is_finished.all(dim=-1) & (self.early_stopping is True)

    def _candidates(self, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``keep`` candidates of each prompt: their scores and flat indices
        (``beam * vocab + token``) in ``totals`` ``[batch, beams * vocab]``."""
        if not self.do_sample:
            return torch.topk(totals, k=self.keep)
        probs = torch.nn.functional.softmax(totals, dim=-1)
        flat = torch.multinomial(probs, num_samples=self.keep, generator=self.generator)
        scores = torch.gather(totals, 1, flat)
        if beam_sample_sorts_draws():
            scores, order = scores.sort(dim=-1, descending=True)
            flat = flat.gather(-1, order)
        return scores, flat

    def _finish_candidates(
        self,
        candidates: torch.Tensor,
        scores: torch.Tensor,
        origins: torch.Tensor,
        ends: torch.Tensor,
        generated: int,
    ) -> None:
        """Merges the candidates that end (among the first ``num_beams``) into the
        finished hypotheses, keeping the ``num_beams`` best of each prompt."""
        finishing = ends & self._first_candidates[None, :]
        penalised = scores / (generated**self.length_penalty)
        # a prompt whose finished hypotheses can no longer change takes none
        full = self._finished_for_good().unsqueeze(-1)
        penalised = penalised + full.to(torch.float32) * NEVER
        penalised = penalised + (~self.can_improve).to(torch.float32) * NEVER
        penalised = penalised + (~finishing) * NEVER
        merged_scores = torch.cat((self.finished_scores, penalised), dim=1)
        best = torch.topk(merged_scores, k=self.num_beams).indices
        self.finished_scores = _gather(merged_scores, best)
        self.finished_sequences = _gather(torch.cat((self.finished_sequences, candidates), 1), best)
        self.finished_origins = _gather(torch.cat((self.finished_origins, origins), 1), best)
        self.is_finished = _gather(torch.cat((self.is_finished, finishing), 1), best)

    def _update_done(self, generated: int, ends: torch.Tensor) -> None:
        """Whether any prompt may still gain a better hypothesis (see the module)."""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            # a positive penalty favours length: the best a running one could reach
            best_length = self.max_new
        else:
            best_length = generated
        best_running = self.running_scores[:, :1] / (best_length**self.length_penalty)
        worst_finished = torch.where(
            self.is_finished,
            torch.min(self.finished_scores, dim=1, keepdim=True)[0],
            NEVER,
        )
        self.can_improve = self.can_improve & torch.any(
            best_running > worst_finished, dim=-1, keepdim=True
        )
        all_full = bool(self._finished_for_good().all())
        self.done = not bool(self.can_improve.any()) or all_full or bool(ends.all())

    # ------------------------------------------------------------------ the end
    def finish(self) -> Hypotheses:
        """The ``num_return_sequences`` best finished hypotheses of each prompt."""
        n = self.num_return_sequences
        assert self.finished_sequences is not None, "finish() before any step"
        sequences = self.finished_sequences[:, :n].flatten(0, 1)
        scores = self.finished_scores[:, :n].flatten()
        origins = self.finished_origins[:, :n].flatten(0, 1)
        lengths = (origins >= 0).sum(dim=1)
        longest = int(lengths.max())
        return Hypotheses(
            sequences=sequences[:, : self.prompt_length + longest].contiguous(),
            scores=scores,
            beam_indices=origins[:, :longest].long(),
            lengths=[int(n) for n in lengths.tolist()],
        )


def fill_token(options: DecodingOptions) -> int:
    """The token transformers writes after a hypothesis that ended early: the pad id
    (when it is not 0), else the first eos; -1 without eos (nothing ends early then).

    >>> fill_token(DecodingOptions(eos_token_id=2, pad_token_id=7)), fill_token(DecodingOptions())
    (7, -1)
    """
    eos = options.eos_token_ids
    if not eos:
        return -1
    pad = options.effective_pad_token_id
    # transformers writes `pad or eos[0]`: a pad id of 0 reads as "no pad"
    return pad if pad else eos[0]
