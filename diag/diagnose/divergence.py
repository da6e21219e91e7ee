"""The first step where torch and ONNX stop generating the same tokens.

Both backends generate freely with the same decoding loop
(:func:`diag.generation.decoding.decode`, greedy by default) and their raw logits are
kept at every step. The first position where the two token streams differ is the
divergence; at that step both sides had read exactly the same tokens, so their logits
are comparable and tell why they chose differently:

* each side's top-k candidates, with their logits;
* each side's *margin*, the gap between its best and second best logit;
* a verdict. The *usual difference* between the runtimes is the median max absolute
  logits difference on the steps before, where the tokens agreed (the difference at
  the divergence step itself when it is the first step). When that difference is more
  than :data:`NOISE_RTOL` (1%) of the logits' scale, no rounding explains it: the
  exported model computes something else. Otherwise, when both margins are within
  :data:`NEAR_TIE_FACTOR` times the usual difference, the models hesitated between
  two tokens and rounding picked another one: a near tie, benign (frequent in
  float16). When the margins are larger, the export is suspect.

Example::

    div = first_divergence(model, "model.onnx", input_ids, max_new_tokens=30, tokenizer=tok)
    print(div)        # readable report
    div.step          # None when the token streams agree
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from diag.diagnose._backends import make_backends

#: a divergence is called a near tie when both margins stay below this multiple of the
#: usual logits difference between the runtimes
NEAR_TIE_FACTOR = 10.0
#: a usual difference above this fraction of the logits' scale (max |logit| of torch)
#: is more than rounding: float32 stays near 1e-6, float16 / bfloat16 near 1e-3
NOISE_RTOL = 1e-2


@dataclass
class Candidate:
    """One of the best tokens of a side at the divergence step."""

    token_id: int
    logit: float
    text: str | None = None

    def __str__(self) -> str:
        text = f" {self.text!r}" if self.text is not None else ""
        return f"{self.token_id}{text} ({self.logit:.4g})"


@dataclass
class Divergence:
    """Where (and why) two token streams first differ; see :func:`first_divergence`.

    ``step`` is None when the streams agree (the object is then falsy). Steps count the
    new tokens: step 0 is the token chosen from the prefill logits.
    """

    #: first differing step, None when both generated the same tokens
    step: int | None
    #: the batch row where it happens first (the lowest row among the earliest)
    batch_index: int | None
    #: number of steps compared (the shorter stream's length for that row)
    num_steps: int
    #: tokens each side chose at ``step``
    torch_token: int | None = None
    onnx_token: int | None = None
    torch_text: str | None = None
    onnx_text: str | None = None
    #: the top-k candidates of each side at ``step``
    torch_top: list[Candidate] = field(default_factory=list)
    onnx_top: list[Candidate] = field(default_factory=list)
    #: best minus second best logit, each side
    torch_margin: float | None = None
    onnx_margin: float | None = None
    #: max |logits torch - logits onnx| at ``step``
    max_abs_diff: float | None = None
    #: median of that difference over the steps before (where the tokens agreed)
    typical_diff: float | None = None
    #: True: a near tie, benign rounding; False: the export is suspect (see ``verdict``)
    near_tie: bool | None = None
    #: the explanation of ``near_tie``, one sentence
    verdict: str | None = None
    #: the tokens both generated before ``step`` (row ``batch_index``)
    common_prefix: list[int] = field(default_factory=list)
    #: the whole new-token streams of row ``batch_index`` (row 0 when no divergence)
    torch_tokens: list[int] = field(default_factory=list)
    onnx_tokens: list[int] = field(default_factory=list)
    #: first differing step of every batch row (None for rows that agree)
    per_row: list[int | None] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.step is not None

    def __bool__(self) -> bool:
        return self.diverged

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings), e.g. for ``json.dumps``."""
        return asdict(self)

    def __str__(self) -> str:
        if self.step is None:
            rows = f" in all {len(self.per_row)} rows" if len(self.per_row) > 1 else ""
            return f"no divergence: torch and onnx generated the same {self.num_steps} tokens{rows}"
        row = f" (batch row {self.batch_index})" if len(self.per_row) > 1 else ""

        def tok(token: int | None, text: str | None) -> str:
            return f"{token} {text!r}" if text is not None else f"{token}"

        lines = [
            f"first divergence at step {self.step}{row}, after {len(self.common_prefix)} identical tokens",
            f"  torch chose {tok(self.torch_token, self.torch_text)} (margin over its 2nd: {self.torch_margin:.4g})",
            f"  onnx  chose {tok(self.onnx_token, self.onnx_text)} (margin over its 2nd: {self.onnx_margin:.4g})",
            f"  max |logits torch - onnx| at this step: {self.max_abs_diff:.3g}"
            + (
                f" (typical before: {self.typical_diff:.3g})"
                if self.typical_diff is not None
                else ""
            ),
            "  torch top: " + " | ".join(str(c) for c in self.torch_top),
            "  onnx  top: " + " | ".join(str(c) for c in self.onnx_top),
        ]
        if self.verdict:
            lines.append(f"  verdict: {self.verdict}")
        return "\n".join(lines)


def _top(logits: torch.Tensor, k: int, tokenizer: Any) -> list[Candidate]:
    values, ids = logits.float().topk(min(k, logits.shape[-1]))
    texts = [tokenizer.decode([i]) for i in ids.tolist()] if tokenizer is not None else None
    return [
        Candidate(int(i), float(v), texts[j] if texts else None)
        for j, (i, v) in enumerate(zip(ids.tolist(), values.tolist(), strict=True))
    ]


def _margin(logits: torch.Tensor) -> float:
    top2 = logits.float().topk(min(2, logits.shape[-1])).values
    return float(top2[0] - top2[-1])


def _verdict(
    t_logits: torch.Tensor, t_margin: float, o_margin: float, typical: float | None, diff: float
) -> tuple[bool, str]:
    """``(near_tie, explanation)``, see the module docstring."""
    noise = typical if typical is not None else diff
    where = "on the agreeing steps before" if typical is not None else "at this first step"
    scale = max(1.0, float(t_logits.float().abs().max()))
    if noise > NOISE_RTOL * scale:
        return False, (
            f"not rounding, the logits differ by {noise:.3g} {where}, {noise / scale:.1%} of "
            f"their scale ({scale:.3g}); the exported model computes something different "
            "(see compare_teacher_forced and localize_layer)"
        )
    if max(t_margin, o_margin) <= NEAR_TIE_FACTOR * noise:
        return True, (
            f"near tie, both margins are within {NEAR_TIE_FACTOR:g}x the usual difference "
            f"between the runtimes ({noise:.3g}); rounding chose another token (benign)"
        )
    return False, (
        f"not a near tie, a margin is far above the usual difference between the runtimes "
        f"({noise:.3g}); the exported model computes something different at this step "
        "(see compare_teacher_forced and localize_layer)"
    )


def _row_stream(result: Any, row: int) -> list[int]:
    return result.new_tokens[row, : result.num_generated_tokens[row]].tolist()


def first_divergence(
    model: Any,
    onnx_model_or_session: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    *,
    tokenizer: Any = None,
    num_candidates: int = 5,
    seed: int | None = None,
    providers: Any = None,
    **decoding: Any,
) -> Divergence:
    """Generates with both backends and reports the first step where their tokens differ.

    :param model: the transformers causal LM (or a torch StepBackend)
    :param onnx_model_or_session: a path, an ``onnx.ModelProto``, an
        ``onnxruntime.InferenceSession`` or an :class:`~diag.ort.backend.OrtBackend`
    :param input_ids: the prompt ``[batch, seq]`` (left-padded for batches)
    :param attention_mask: ``[batch, seq]``, 0 on the padding
    :param max_new_tokens: length of the generations
    :param tokenizer: adds the text of the tokens to the report
    :param num_candidates: number of candidates reported per side (not ``top_k``,
        which is the sampling option of that name)
    :param seed: seeds both sides' sampling generators identically (sampling only)
    :param providers: ONNX Runtime providers when a path / ModelProto is given
    :param decoding: other decoding options, ``GenerationConfig`` names
        (``do_sample``, ``temperature``, ``eos_token_id``, ``repetition_penalty``...);
        greedy (``do_sample=False``) unless given, whatever the model's
        ``generation_config`` says
    :return: a :class:`Divergence`, falsy when both streams agree

    Example::

        div = first_divergence(model, "model.onnx", ids, max_new_tokens=40, tokenizer=tok)
        if div:
            print(div)  # step, both sides' top-5, margins, verdict
    """
    # imported here: diag.generation imports transformers, which `import diag.diagnose` skips
    from diag.generation.decoding import check_inputs, decode
    from diag.generation.options import resolve_options

    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}.")
    if "output_logits" in decoding or "output_scores" in decoding:
        raise ValueError("first_divergence sets output_logits itself; do not pass it.")
    input_ids, attention_mask = check_inputs(input_ids, attention_mask)
    decoding.setdefault("do_sample", False)
    if decoding["do_sample"] and seed is None:
        raise ValueError(
            "first_divergence with do_sample=True needs a seed: both sides must draw the same "
            "random numbers for their tokens to be comparable."
        )
    defaults = getattr(model, "generation_config", None)
    options = resolve_options(
        defaults=defaults, max_new_tokens=max_new_tokens, output_logits=True, **decoding
    )
    torch_backend, ort_backend = make_backends(model, onnx_model_or_session, providers)

    def gen(backend: Any) -> Any:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return decode(backend, input_ids, attention_mask, options, generator=generator)

    pt = gen(torch_backend)
    ox = gen(ort_backend)

    per_row: list[int | None] = []
    for row in range(pt.batch_size):
        a, b = _row_stream(pt, row), _row_stream(ox, row)
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if first is None and len(a) != len(b):
            # one side stopped (eos) where the other went on: the shorter one's end
            first = min(len(a), len(b))
        per_row.append(first)

    found = [(s, r) for r, s in enumerate(per_row) if s is not None]
    if not found:
        return Divergence(
            step=None,
            batch_index=None,
            num_steps=len(pt.logits),
            torch_tokens=_row_stream(pt, 0),
            onnx_tokens=_row_stream(ox, 0),
            per_row=per_row,
        )
    step, row = min(found)
    a, b = _row_stream(pt, row), _row_stream(ox, row)
    t_logits, o_logits = pt.logits[step][row], ox.logits[step][row]
    diffs = [float((pt.logits[i][row] - ox.logits[i][row]).abs().max()) for i in range(step + 1)]
    typical = float(torch.tensor(diffs[:-1]).median()) if step > 0 else None
    t_margin, o_margin = _margin(t_logits), _margin(o_logits)
    near_tie, verdict = _verdict(t_logits, t_margin, o_margin, typical, diffs[-1])
    t_tok = a[step] if step < len(a) else None
    o_tok = b[step] if step < len(b) else None

    def text(token: int | None) -> str | None:
        return tokenizer.decode([token]) if tokenizer is not None and token is not None else None

    return Divergence(
        step=step,
        batch_index=row,
        num_steps=min(len(a), len(b)),
        torch_token=t_tok,
        onnx_token=o_tok,
        torch_text=text(t_tok),
        onnx_text=text(o_tok),
        torch_top=_top(t_logits, num_candidates, tokenizer),
        onnx_top=_top(o_logits, num_candidates, tokenizer),
        torch_margin=t_margin,
        onnx_margin=o_margin,
        max_abs_diff=diffs[-1],
        typical_diff=typical,
        near_tie=near_tie,
        verdict=verdict,
        common_prefix=a[:step],
        torch_tokens=a,
        onnx_tokens=b,
        per_row=per_row,
    )


__all__ = ["NEAR_TIE_FACTOR", "NOISE_RTOL", "Candidate", "Divergence", "first_divergence"]
