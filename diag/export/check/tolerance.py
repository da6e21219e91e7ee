"""The tolerance of an export's check against torch (:func:`diag.export.validate_causal_lm`,
and :mod:`diag.testing`, which uses the same rule), and the differences it bounds.

The tolerance is ``atol`` (float32: 1e-4 absolute; float16 and bfloat16: the rounding
bound of a sum of the model's hidden size in that dtype, :func:`default_atol`), unless
the dtype itself cannot be
that precise: for a deep model, two correct float32 implementations (torch and ONNX
Runtime use other kernels, other summation orders) differ by more than 1e-4 on logits
of magnitude 30 (SmolLM2: torch float32 is ~3e-3 away from float64 on a prefill).
When a group exceeds ``atol``, the validation runs a float64 copy of the model on the
same inputs and measures the *float32 noise* ``|torch float32 - torch float64|`` (in a
float16 model, its float16 noise); the
group passes when its difference stays within ``max(atol, 8 * noise)``
(:data:`NOISE_FACTOR`: the difference adds up the rounding errors of both runtimes,
and ONNX Runtime's fused kernels round more than torch's: its ``Attention`` kernel
computes the softmax with its own exponential, and SmolLM2's prefill ``present.value``
lands at 5.2 times torch's noise, 7.6e-4), and the table shows that bound. An
export error (a wrong mask, a baked shape) gives differences of the size of the
values themselves, orders of magnitude above it. ``noise_floor=False`` keeps the
strict absolute tolerance.

A quantized export (:func:`diag.export.make.quantize.quantize_model`, its options in the
file's metadata) cannot match float32 torch to rounding: its weights moved by up to
half a quantization step. The validation reads the options from the metadata and
checks each group's relative RMS difference ``||onnx - torch|| / ||torch||`` against
:data:`QUANTIZED_RTOL` (per number of bits) instead, and the table says so. It does on
the input sets with an empty past only (their ``present`` outputs are compared too):
a random past puts a quantized model far off the values it was made for (SmolLM2
int4: a relative difference of 1.2 on the logits of a decode over a random past, 0.2
on a prefill). That tolerance catches
what breaks an export (a wrong mask, a baked shape, a cache in the wrong order give
differences of the size of the values), not the quality of the quantization: that is
the job of :func:`diag.quantization_report` (tokens, KL, perplexity).

Example::

    >>> noise_aware_tolerance(default_atol(torch.float32), 1e-3)
    0.008
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diag.helpers.max_diff import max_diff
from diag.helpers.rounding import accumulation_tolerance

# a difference within this many times the float32 noise is rounding, not an export error
NOISE_FACTOR = 8.0

#: absolute tolerance on logits and cache of a float32 model
FLOAT32_ATOL = 1e-4

#: the accumulation length :func:`default_atol` assumes when the model's is not given
DEFAULT_TERMS = 1024

#: tolerance of a quantized export, per number of bits of its weights: the largest
#: relative RMS difference ``||onnx - torch|| / ||torch||`` of each output group and
#: input set
QUANTIZED_RTOL = {8: 0.3, 4: 1.0}


def default_atol(dtype: torch.dtype, terms: int | None = None) -> float:
    """The absolute tolerance on logits and cache of a model of ``dtype``: float32,
    :data:`FLOAT32_ATOL`; another dtype, the rounding bound of a sum of ``terms`` unit
    products in it (:func:`~diag.helpers.rounding.accumulation_tolerance`: ``terms``
    is the model's accumulation length, its hidden size; None:
    :data:`DEFAULT_TERMS`), which the float64 noise floor raises when the model's own
    rounding is larger (:func:`noise_aware_tolerance`).

    >>> default_atol(torch.float32), round(default_atol(torch.float16, 64), 3)
    (0.0001, 0.065)
    """
    if dtype == torch.float32:
        return FLOAT32_ATOL
    return accumulation_tolerance(terms or DEFAULT_TERMS, 1.0, dtype)


def accumulation_length(model: torch.nn.Module) -> int | None:
    """The length of the sums a model's layers compute, its hidden size (None when its
    config has none)."""
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(config, "hidden_size", None)
    return size if isinstance(size, int) and size > 0 else None


def noise_aware_tolerance(atol: float, noise: float | None) -> float:
    """The tolerance of a difference between two float32 implementations: ``atol``, or
    :data:`NOISE_FACTOR` times the float32 noise ``|torch float32 - torch float64|``
    when that is larger (None: the noise was not measured). :mod:`diag.testing` uses
    the same rule.

    >>> noise_aware_tolerance(1e-4, None), noise_aware_tolerance(1e-4, 1e-3)
    (0.0001, 0.008)
    """
    return atol if noise is None else max(atol, NOISE_FACTOR * noise)


def aligned_to_torch(expected: torch.Tensor, got: np.ndarray) -> np.ndarray:
    """A sliding-window layer keeps its last positions in torch, all of them in ONNX:
    compares the positions torch kept."""
    if expected.dim() == 4 and got.ndim == 4 and expected.shape[2] < got.shape[2]:
        return got[:, :, got.shape[2] - expected.shape[2] :, :]
    return got


def max_abs(expected: Any, got: Any) -> float:
    """Largest absolute difference (:func:`diag.helpers.max_diff.max_diff`), inf on a shape mismatch
    or a NaN on one side only."""
    return float(max_diff(expected, got)["abs"])


def relative_rms(expected: Any, got: Any, mask: torch.Tensor) -> float:
    """``||got - expected|| / ||expected||`` over a tensor or a list of them (inf on a
    shape mismatch), on the real tokens only: ``mask`` ``[batch, total]`` is the
    attention mask (the values computed at padded positions mean nothing, and a
    quantized model moves them most)."""
    pairs = zip(expected, got, strict=True) if isinstance(expected, list) else [(expected, got)]
    keep = mask.cpu().numpy().astype(bool)
    num = den = 0.0
    for e, g in pairs:
        e = e.detach().cpu().double().numpy()
        g = np.asarray(g, dtype=np.float64)
        if e.shape != g.shape:
            return float("inf")
        if e.ndim == 4:  # present [batch, heads, total, head_dim]
            real = keep[:, None, keep.shape[1] - e.shape[2] :, None]
        else:  # logits [batch, seq, vocab]
            real = keep[:, keep.shape[1] - e.shape[1] :, None]
        num += float((((g - e) ** 2) * real).sum())
        den += float(((e**2) * real).sum())
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))
