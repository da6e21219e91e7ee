from __future__ import annotations

import pytest
import torch

from diag.diagnose.kernel_time import profile_by_op_type, profile_phases


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.tensor([[5, 6, 7, 8, 9, 10]])


def test_profile_by_op_type_counts_every_step_of_the_generation(tiny_onnx, prompt):
    df = profile_by_op_type(tiny_onnx, prompt, new_tokens=4, threads=1)
    # 4 new tokens: the prefill and 3 decode steps, each running every MatMul node once
    assert "MatMul" in df.index
    assert df["share_%"].sum() == pytest.approx(100.0)
    assert (df["calls"] / df["calls_per_step"]).round().eq(4).all()
    assert df.loc["MatMul", "calls"] % 4 == 0


def test_profile_phases_splits_prefill_from_a_decode_step(tiny_onnx, prompt):
    df = profile_phases(tiny_onnx, prompt, new_tokens=4, threads=1)
    assert list(df.columns) == ["prefill_ms", "prefill_%", "decode_ms", "decode_%"]
    assert df["prefill_%"].sum() == pytest.approx(100.0)
    assert df["decode_%"].sum() == pytest.approx(100.0)
    assert (df["prefill_ms"] > 0).any() and (df["decode_ms"] > 0).any()
    # sorted by the decode step's time, largest first
    assert df["decode_ms"].is_monotonic_decreasing
