"""bench/bench_moe.py's own functions on the zoo's tiny qwen3_moe export: the module
scope of each ONNX node, and the experts' share of a profiled decode step."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from diag.export import export_causal_lm
from diag.models import get_untrained_model_with_inputs

BENCH = Path(__file__).resolve().parents[2] / "bench"

# pinned: the bench's profiling and scope reading over diag's public API and ONNX
# Runtime's profiler, not over a transformers release (the export itself is tested on
# every release)
pytestmark = pytest.mark.pinned


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_moe", BENCH / "bench_moe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("bench_moe", None)
    return module


@pytest.fixture(scope="module")
def tiny_moe():
    model = get_untrained_model_with_inputs("qwen3_moe")["model"]
    return model, export_causal_lm(model, verify=False).filename


def test_node_scopes_name_the_experts_of_each_layer(bench, tiny_moe):
    model, path = tiny_moe
    scopes = bench.node_scopes_of(path)
    inner = [names[-2] for names in scopes.values() if len(names) >= 2]  # last: the op
    experts = {s.split(".mlp.")[0] for s in inner if bench.EXPERTS_SCOPE in s}
    assert experts == {f"model.layers.{i}" for i in range(model.config.num_hidden_layers)}
    assert any(bench.ROUTER_SCOPE in s for s in inner)


def test_decode_shares_split_a_step(bench, tiny_moe):
    _, path = tiny_moe
    ids = torch.tensor([[5, 6, 7, 8]])
    shares = bench.decode_shares(path, ids, new_tokens=3)
    assert shares["step_kernel_ms"] > 0
    assert 0 < shares["experts_ms"] < shares["step_kernel_ms"]
    assert 0 < shares["experts_%"] + shares["router_%"] < 100
