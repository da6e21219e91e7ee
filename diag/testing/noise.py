"""How far two float32 runs of the same model may be apart: the float32 noise, measured
against a float64 copy, and the tolerance export validation derives from it.

Two correct float32 implementations (torch and ONNX Runtime, or two releases of
either) sum in other orders and differ by more than a fixed ``1e-4`` on the logits of
a deep model. Export validation (:mod:`diag.export.check.validate`) measures the float32
noise ``|torch float32 - torch float64|`` and accepts a difference within
:func:`~diag.export.check.tolerance.noise_aware_tolerance` of it; :mod:`diag.testing` uses
that same function, on generations: the noise is the largest logits difference
between the model and its float64 copy over the steps where both chose the same tokens
(:attr:`~diag.diagnose.divergence.Divergence.largest_diff`).

Example::

    noise = float32_noise(model, ids, mask, options, result)   # result: model's own run
    tol = tolerance_of(None, noise, side)   # atol of the side's dtype, raised to 8x noise
"""

from __future__ import annotations

from typing import Any

import torch

from diag.compat.moe_blocks import float64_copy
from diag.diagnose.divergence import find_divergence
from diag.diagnose.sides import generate_side, narrowest_dtype
from diag.export.check.tolerance import accumulation_length, default_atol, noise_aware_tolerance
from diag.generation.steps import Steps, open_steps


def float32_noise(
    side: Steps,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    options: Any,
    result: Any,
    seed: int | None = None,
) -> float | None:
    """The largest logits difference between the torch model of ``side`` and a float64
    copy of it on the same prompts and options, over the steps where both read the
    same tokens; ``result`` is the side's own run. None when ``side`` is no torch model.
    """
    if side.model is None or result.logits is None:
        return None
    exact = open_steps(float64_copy(side.model), what=f"{side.name} (float64)")
    exact_result = generate_side(exact, input_ids, attention_mask, options, seed)
    div = find_divergence(
        result.generated(), exact_result.generated(), result.logits, exact_result.logits
    )
    return div.largest_diff


def tolerance_of(atol: float | None, noise: float | None, *sides: Steps) -> float:
    """The tolerance on logits: ``atol``, None: export validation's default for the
    narrowest dtype of ``sides`` (:func:`~diag.diagnose.sides.narrowest_dtype`: a float16
    side rounds more) and the torch model's hidden size, raised to the noise rule of
    export validation.

    >>> tolerance_of(None, None), tolerance_of(None, 1e-3)
    (0.0001, 0.008)
    """
    models = [s.model for s in sides if s.model is not None]
    terms = accumulation_length(models[0]) if models else None
    base = default_atol(narrowest_dtype(*sides), terms) if atol is None else atol
    return noise_aware_tolerance(base, noise)


__all__ = ["float32_noise", "tolerance_of"]
