"""How far two float32 runs of the same model may be apart: the tolerance export
validation derives from the float32 noise.

Two correct float32 implementations (torch and ONNX Runtime, or two releases of
either) sum in other orders and differ by more than a fixed ``1e-4`` on the logits of
a deep model. Export validation (:mod:`diag.export.check.validate`) measures the float32
noise ``|torch float32 - torch float64|`` and accepts a difference within
:func:`~diag.export.check.tolerance.noise_aware_tolerance` of it; :mod:`diag.testing` uses
that same function, on generations, with the noise that
:func:`~diag.diagnose.sides.float32_noise` measures (the torch side against its float64
copy, compared as any two sides are).

Example::

    noise = float32_noise(side, ids, mask, options, result)   # result: the side's own run
    tol = tolerance_of(None, noise, side)   # atol of the side's dtype, raised to 8x noise
"""

from __future__ import annotations

from diag.diagnose.sides import narrowest_dtype
from diag.export.check.tolerance import accumulation_length, default_atol, noise_aware_tolerance
from diag.generation.steps import Steps


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


__all__ = ["tolerance_of"]
