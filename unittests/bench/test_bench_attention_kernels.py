"""bench/bench_attention_kernels.py on small shapes: every contender computes the same
attention as torch (decode past a few positions, a causal prefill in chunks that do
not divide the prompt), the checker refuses a contender that computes something else,
and the timing table has a row per contender."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

# pinned: hand-built ONNX graphs and torch, no transformers model: the release phases
# would run the same thing again
pytestmark = pytest.mark.pinned


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attention_kernels", BENCH / "bench_attention_kernels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def shapes(bench):
    return bench.Shapes(layers=2, heads=4, kv_heads=2, head_dim=8)


def test_cache_bytes(bench):
    # SmolLM2 at 2048 positions: 30 layers x (K, V) x 3 heads x 64 x 4 bytes
    assert bench.Shapes().cache_bytes(2048) == 30 * 2 * 3 * 2048 * 64 * 4
    assert bench.Shapes().group == 3


@pytest.mark.parametrize("past", [0, 5, 30])
def test_decode_contenders_agree(bench, shapes, past):
    contenders = bench.decode_contenders(shapes, past, max_length=32, threads=1)
    expected = contenders["torch matmul, grouped"]()
    assert expected.shape == (2, 2, 8)
    for name, call in contenders.items():
        np.testing.assert_allclose(call(), expected, atol=1e-5, err_msg=name)
    # GroupQueryAttention writes in place at `past`: a second call reads the same cache
    np.testing.assert_allclose(contenders["ort GroupQueryAttention"](), expected, atol=1e-5)


def test_decode_refuses_a_full_buffer(bench, shapes):
    with pytest.raises(ValueError, match="max_length=8"):
        bench.decode_contenders(shapes, 8, max_length=8, threads=1)


def test_prefill_contenders_agree(bench, shapes):
    contenders = bench.prefill_contenders(shapes, prompt=21, threads=1, chunk=8)
    assert set(contenders) == {"torch sdpa", "ort GroupQueryAttention", "ort Attention (opset 23)",
                               "ort MatMul chunks of 8"}  # fmt: skip
    bench.check_same(contenders, "torch sdpa", atol=1e-5)
    expected = contenders["torch sdpa"]()
    assert expected.shape == (4, 21, 8)


def test_check_same_refuses_another_computation(bench, shapes):
    contenders = bench.prefill_contenders(shapes, prompt=9, threads=1, chunk=4)
    contenders["wrong"] = lambda: contenders["torch sdpa"]() * 1.01
    with pytest.raises(AssertionError, match="wrong differs from torch sdpa"):
        bench.check_same(contenders, "torch sdpa")


def test_alternate_table(bench):
    calls = []
    table = bench.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2, reps=3)
    assert list(table.index) == ["a", "b"]
    assert (table["ms"] >= 0).all() and (table["spread"] >= 0).all()
    # warm-up, then the contenders alternate round by round
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
