"""``assert_logits_close``: the logits of two sides on the same inputs, within the
noise-aware tolerance of export validation.

Both sides run the same inputs through the shared decoding loop, greedily, for
``max_new_tokens`` steps (1: the prefill only); every step where both sides had read
the same tokens is compared. The tolerance is that of :mod:`diag.export.check.validate`:
``atol`` (the model dtype's default when None), raised, when some difference exceeds
it and a side is a torch model, to :data:`~diag.export.check.tolerance.NOISE_FACTOR` times
the float32 noise measured against a float64 copy of that model
(``noise_floor=False`` keeps ``atol``); ``rtol`` adds ``rtol * |reference|`` per logit.
The message names the worst logit: prompt, step, position, token and both values.

Example::

    assert_logits_close(model, "model.onnx", {"input_ids": ids, "attention_mask": mask})
"""

from __future__ import annotations

from typing import Any

import torch

from diag.diagnose.divergence import first_divergent_step
from diag.diagnose.sides import compare_sides, comparison_options, float32_noise
from diag.diagnose.token_text import shown_token, token_text
from diag.generation.steps import open_steps
from diag.helpers.wrap import wrap_report
from diag.testing.noise import tolerance_of
from diag.testing.prompts import encode_prompts
from diag.testing.prompts import prompt_rows as _prompt_rows
from diag.testing.tokens import describe_prompt


def _compared_steps(rows_a: list[list[int]], rows_b: list[list[int]]) -> list[int]:
    """Per row, the number of steps whose inputs were the same on both sides: up to the
    first divergence included, all the steps of a row that agrees."""
    counts = []
    for a, b in zip(rows_a, rows_b, strict=True):
        step = first_divergent_step(a, b)
        counts.append(min(len(a), len(b)) if step is None else min(step + 1, len(a), len(b)))
    return counts


def _worst(
    ref_logits: list[torch.Tensor], cand_logits: list[torch.Tensor], counts: list[int],
    tolerance: float, rtol: float,
) -> dict[str, Any]:  # fmt: skip
    """The logit with the largest difference relative to its allowed difference."""
    worst: dict[str, Any] = {"ratio": -1.0, "max_abs": 0.0, "beyond": 0, "compared": 0}
    for step, (ra, rb) in enumerate(zip(ref_logits, cand_logits, strict=False)):
        for row, count in enumerate(counts):
            if step >= count:
                continue
            x, y = ra[row].double(), rb[row].double()
            diff = (x - y).abs().nan_to_num(torch.inf)
            allowed = tolerance + rtol * x.abs()
            ratio = diff / allowed
            token = int(ratio.argmax())
            worst["beyond"] += int((diff > allowed).sum())
            worst["compared"] += diff.numel()
            worst["max_abs"] = max(worst["max_abs"], float(diff.max()))
            if float(ratio[token]) > worst["ratio"]:
                worst.update(
                    ratio=float(ratio[token]), row=row, step=step, token=token,
                    reference=float(x[token]), candidate=float(y[token]),
                    diff=float(diff[token]), allowed=float(allowed[token]),
                )  # fmt: skip
    return worst


def assert_logits_close(
    reference: Any,
    candidate: Any,
    inputs: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    noise_floor: bool = True,
    max_new_tokens: int = 1,
    tokenizer: Any = None,
    providers: Any = None,
) -> float:
    """Asserts that ``candidate``'s logits are within tolerance of ``reference``'s.

    :param reference: a transformers causal LM, an ONNX file or folder, an
        ``onnx.ModelProto`` or an ``onnxruntime.InferenceSession``
    :param candidate: the same kinds
    :param inputs: ``{"input_ids": ..., "attention_mask": ...}``, an ``input_ids``
        tensor, lists of token ids or text (with ``tokenizer``)
    :param atol: absolute tolerance; None: export validation's default for the torch
        model's dtype (1e-4 in float32)
    :param rtol: relative tolerance (of ``|reference|``), 0 when None
    :param noise_floor: raises ``atol`` to 8 times the float32 noise when a difference
        exceeds it (a float64 copy of the torch side runs the same inputs), as export
        validation does
    :param max_new_tokens: decoding steps compared (1: the prefill's logits)
    :param tokenizer: tokenizes text inputs
    :param providers: ONNX Runtime providers of a session created here
    :return: the largest absolute difference
    :raises AssertionError: naming the worst logit (prompt, step, position, token),
        both values, its difference and the tolerance

    >>> import diag.testing
    >>> from diag.models import get_untrained_model_with_inputs
    >>> m = get_untrained_model_with_inputs("llama")["model"]
    >>> diag.testing.assert_logits_close(m, m, [[5, 6, 7]])
    0.0
    """
    ref = open_steps(reference, providers=providers, what="reference")
    cand = open_steps(candidate, providers=providers, what="candidate")
    options, seed = comparison_options(ref.defaults, max_new_tokens, {})
    input_ids, attention_mask = encode_prompts(inputs, tokenizer)
    a, b, _ = compare_sides(ref, cand, input_ids, attention_mask, options, seed)
    counts = _compared_steps(a.generated(), b.generated())
    rtol = 0.0 if rtol is None else rtol
    tolerance = tolerance_of(atol, None, ref, cand)
    worst = _worst(list(a.logits), list(b.logits), counts, tolerance, rtol)
    noise = None
    if worst["ratio"] > 1 and noise_floor:
        side, result = (ref, a) if ref.model is not None else (cand, b)
        noise = float32_noise(side, input_ids, attention_mask, options, result, seed)
        if noise is not None:
            tolerance = tolerance_of(atol, noise, ref, cand)
            worst = _worst(list(a.logits), list(b.logits), counts, tolerance, rtol)
    if worst["ratio"] <= 1:
        return worst["max_abs"]
    prompts = _prompt_rows(input_ids, attention_mask)
    row, step = worst["row"], worst["step"]
    base = tolerance_of(atol, None, ref, cand)
    how = f"atol={base:g}" + (f", rtol={rtol:g}" if rtol else "")
    if noise is not None:
        how += f", raised to 8x the float32 noise of the torch side ({noise:.3g})"
    elif noise_floor:
        how += " (no torch side: the float32 noise is not measured)"
    token = worst["token"]
    lines = [
        f"logits differ beyond tolerance between the reference ({ref.label}) and the "
        f"candidate ({cand.label}): {worst['beyond']} of {worst['compared']} logits",
        f"  worst: output 'logits', {describe_prompt(row, prompts[row], tokenizer)}, step {step} "
        f"({'prefill' if step == 0 else 'decode'}, position {len(prompts[row]) + step}), "
        f"token {shown_token(token, token_text(tokenizer, token))}",
        f"  reference {worst['reference']:.6g}, candidate {worst['candidate']:.6g}: "
        f"|diff| {worst['diff']:.3g} > allowed {worst['allowed']:.3g} ({how})",
        f"  largest |diff| over every compared logit: {worst['max_abs']:.3g}",
    ]
    raise AssertionError(wrap_report("\n".join(lines)))


__all__ = ["assert_logits_close"]
