"""The tolerance a floating-point computation promises in its dtype, whatever kernel
computes it: :func:`accumulation_tolerance`, :func:`matmul_tolerance` and, for the
logits of a causal LM, :func:`lm_head_tolerance`.

A sum of ``n`` products computed in floating point, in any order, blocked or not, with
or without fused multiply-adds, lands within ``gamma(n) * sum |x_i * y_i|`` of the
exact sum, where ``gamma(n) = n u / (1 - n u)`` and ``u = eps / 2`` is the unit
roundoff (the classic bound of a dot product's rounding error). Two correct kernels
(MKL's AVX-512 sgemm and its AVX2 one, ONNX Runtime's MLAS, a product over 3 rows and
one over all rows, which take other blocking paths) are therefore within twice that of
each other. The bound depends on the dtype, the length of the sum and the size of its
terms, never on the CPU: a test comparing two such computations asserts it instead of a
number measured on one machine.

Example::

    >>> import torch
    >>> from diag.helpers.rounding import accumulation_tolerance, matmul_tolerance
    >>> f"{accumulation_tolerance(64, 1.0, torch.float32):.3g}"
    '7.63e-06'
    >>> a, b = torch.ones(3, 64), torch.ones(64, 5)
    >>> matmul_tolerance(a, b) == accumulation_tolerance(64, 64.0, torch.float32)
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def accumulation_tolerance(
    terms: int, magnitude: float = 1.0, dtype: torch.dtype = torch.float32
) -> float:
    """How far two correct computations in ``dtype`` of one sum of ``terms`` products
    can differ: ``2 * gamma(terms) * magnitude``, ``magnitude`` bounding
    ``sum |x_i * y_i|`` (about ``terms * eps(dtype) * magnitude``).

    :param terms: the length of the sum (a matrix product's inner dimension)
    :param magnitude: a bound on ``sum |x_i * y_i|``
    :param dtype: the dtype the sum is computed in

    >>> f"{accumulation_tolerance(1000, 2.0, torch.float16):.3g}"
    '3.82'
    """
    if not dtype.is_floating_point:
        raise ValueError(f"{dtype} is not a floating-point dtype: compare its values exactly.")
    if terms < 1:
        raise ValueError(f"terms={terms}: a sum has at least one term.")
    unit_roundoff = torch.finfo(dtype).eps / 2
    if terms * unit_roundoff >= 1:
        raise ValueError(
            f"a sum of {terms} terms in {dtype} has no rounding bound (terms * eps / 2 >= 1): "
            "compute it in a wider dtype."
        )
    gamma = terms * unit_roundoff / (1 - terms * unit_roundoff)
    return 2 * gamma * float(magnitude)


def matmul_tolerance(a: Any, b: Any) -> float:
    """How far two correct computations of ``a @ b`` can differ, element by element:
    :func:`accumulation_tolerance` of its inner dimension, in ``a``'s dtype, with the
    largest ``(|a| @ |b|)`` (computed in float64) as the magnitude. ``a`` and ``b`` are
    torch tensors or numpy arrays; for a linear layer, ``b`` is ``weight.T``.

    :param a: the left operand
    :param b: the right operand

    >>> f"{matmul_tolerance(torch.full((2, 8), 0.5), torch.full((8, 3), 2.0)):.3g}"
    '7.63e-06'
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape[-1] != b.shape[-2 if b.dim() > 1 else 0]:
        raise ValueError(
            f"a {tuple(a.shape)} @ b {tuple(b.shape)}: the inner dimensions differ; "
            "for a linear layer pass weight.T."
        )
    magnitude = (a.detach().double().abs() @ b.detach().double().abs()).max()
    return accumulation_tolerance(a.shape[-1], float(magnitude), a.dtype)


def lm_head_tolerance(model: torch.nn.Module, **inputs: Any) -> float:
    """How far two correct computations of ``model``'s logits from the same hidden states
    can differ: :func:`matmul_tolerance` of its output head on the hidden states a
    forward on ``inputs`` feeds it (run on a copy: a forward appends to a cache). The
    bound of a head computed over some positions against one over all of them.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> data = get_untrained_model_with_inputs("llama")
    >>> 0 < lm_head_tolerance(data["model"], input_ids=data["inputs"]["input_ids"]) < 1e-3
    True
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no linear output head (get_output_embeddings): "
            "bound its last product with matmul_tolerance instead."
        )
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _module, args, _output: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(**copy.deepcopy(inputs))
    finally:
        hook.remove()
    return matmul_tolerance(seen[-1], head.weight.T)


__all__ = ["accumulation_tolerance", "lm_head_tolerance", "matmul_tolerance"]
