"""bench/bench_beam.py's own functions on the zoo's tiny llama export: the reorder clock
counts one reorder per step whose hypotheses moved, and gives the class's method back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from diag.export import export_causal_lm
from diag.generation import open_steps
from diag.models import get_untrained_model_with_inputs

BENCH = Path(__file__).resolve().parents[2] / "bench"

# pinned: the bench's timing wrapper over diag's public API, not over a transformers
# release (beam search itself is tested on every release)
pytestmark = pytest.mark.pinned


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_beam", BENCH / "bench_beam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("bench_beam", None)
    return module


def test_reorder_share_counts_the_reorders(bench):
    model = get_untrained_model_with_inputs("llama")["model"]
    backend = open_steps(export_causal_lm(model, verify=False)).backend
    ids = torch.randint(3, 1000, (1, 6), generator=torch.Generator().manual_seed(0))
    seconds, calls, decode = bench.reorder_share(
        backend, ids, max_new_tokens=8, num_beams=4, eos_token_id=None
    )
    # at most one reorder before each of the 7 decode steps (none when no row moved)
    assert 1 <= calls <= 7
    assert 0 < seconds < decode
    # the clock is gone: the backend's own method again
    assert "reorder" not in vars(backend)
