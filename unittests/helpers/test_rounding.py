"""diag.helpers.rounding: the tolerance a sum of products promises in its dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.compat.transformers_api import cache_argument
from diag.helpers.rounding import accumulation_tolerance, lm_head_tolerance, matmul_tolerance
from diag.models import get_untrained_model_with_inputs


@pytest.mark.pinned  # float arithmetic only, no transformers model
def test_one_term_is_one_rounding_on_each_side():
    eps = torch.finfo(torch.float32).eps
    assert accumulation_tolerance(1, 3.0) == pytest.approx(3.0 * eps, rel=1e-6)
    # a wider dtype promises more, a narrower one less
    assert accumulation_tolerance(10, 1.0, torch.float64) < accumulation_tolerance(10)
    assert accumulation_tolerance(10) < accumulation_tolerance(10, 1.0, torch.bfloat16)


def _sums_in_every_order(x: torch.Tensor) -> list[float]:
    """float32 sums of ``x`` in the orders kernels use: left to right, right to left,
    pairwise (torch), and blocked by 16 lanes (a SIMD accumulator)."""
    left = right = torch.zeros((), dtype=torch.float32)
    for v in x:
        left = left + v
    for v in x.flip(0):
        right = right + v
    lanes = torch.zeros(16, dtype=torch.float32)
    for block in x.reshape(-1, 16):
        lanes = lanes + block
    return [float(left), float(right), float(x.sum()), float(lanes.sum())]


@pytest.mark.pinned  # float arithmetic only, no transformers model
def test_every_summation_order_stays_within_the_bound():
    # terms of mixed signs and magnitudes: each order rounds differently
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, generator=generator) * torch.logspace(-3, 3, 512)
    exact = float(x.double().sum())
    sums = _sums_in_every_order(x)
    bound = accumulation_tolerance(len(x), float(x.abs().double().sum()))
    assert len(set(sums)) > 1  # the orders do disagree in float32
    assert max(abs(s - exact) for s in sums) <= bound / 2
    assert max(sums) - min(sums) <= bound


@pytest.mark.pinned  # float arithmetic only, no transformers model
def test_matmul_tolerance_covers_a_product_over_fewer_rows():
    generator = torch.Generator().manual_seed(1)
    h, w = torch.randn(2, 9, 64, generator=generator), torch.randn(1000, 64, generator=generator)
    every = torch.nn.functional.linear(h, w)
    some = torch.nn.functional.linear(h[:, [0, 4, 8]], w)
    exact = h.double() @ w.double().T
    atol = matmul_tolerance(h, w.T)
    assert atol == accumulation_tolerance(64, float((h.abs().double() @ w.abs().double().T).max()))
    assert float((every.double() - exact).abs().max()) <= atol / 2
    torch.testing.assert_close(some, every[:, [0, 4, 8]], rtol=0, atol=atol)


@pytest.mark.pinned  # float arithmetic only, no transformers model
def test_matmul_tolerance_reads_numpy_and_the_dtype_of_a():
    a, b = np.ones((2, 8), dtype=np.float32), np.ones((8, 3), dtype=np.float32)
    assert matmul_tolerance(a, b) == accumulation_tolerance(8, 8.0, torch.float32)
    half = matmul_tolerance(torch.ones(2, 8, dtype=torch.float16), torch.ones(8, 3))
    assert half == accumulation_tolerance(8, 8.0, torch.float16)


def test_lm_head_tolerance_reads_the_hidden_states_the_head_reads():
    data = get_untrained_model_with_inputs("llama")
    model, inputs = data["model"].eval(), data["inputs"]
    name = cache_argument(model)
    before = inputs[name].get_seq_length()
    atol = lm_head_tolerance(model, **inputs)
    # the forward ran on a copy: the cache given is left as it was
    assert inputs[name].get_seq_length() == before
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]  # after the norm
    assert atol == matmul_tolerance(hidden, model.lm_head.weight.T)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accumulation_tolerance(4, 1.0, torch.int64), "not a floating-point dtype"),
        (lambda: accumulation_tolerance(0), "at least one term"),
        (lambda: accumulation_tolerance(4096, 1.0, torch.float16), "compute it in a wider dtype"),
        (lambda: matmul_tolerance(torch.ones(2, 8), torch.ones(3, 8)), "pass weight.T"),
        (lambda: lm_head_tolerance(torch.nn.Linear(2, 3), input=torch.ones(1, 2)), "no linear"),
    ],
)
@pytest.mark.pinned  # float arithmetic only, no transformers model
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()
