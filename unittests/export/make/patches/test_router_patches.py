"""phimoe_router_keeps_its_choice: the patched router routes as transformers' does (the
float16 export of phimoe generating model.generate's tokens is test_dtype.py's)."""

from __future__ import annotations

import pytest
import torch

from diag.export import torch_export_patches
from diag.export.make.patches import ROUTER_PATCHES

modeling = pytest.importorskip("transformers.models.phimoe.modeling_phimoe")


def _scores(dtype: torch.dtype) -> torch.Tensor:
    scores = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    scores[0] = torch.tensor([1.0, 1.0, 0.5, -2.0])  # a tie on the best expert
    scores[1] = torch.tensor([0.3, -1.0, 0.3, 0.3])  # three tied after the first
    scores[2] = torch.tensor([-0.25, -0.5, -0.003, -0.1])  # all negative
    return scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("jitter_eps", [0.0, 0.01, 0.5])
def test_patched_router_routes_as_the_original(dtype, jitter_eps):
    scores = _scores(dtype)
    expected = modeling.sparsemixer(scores, jitter_eps, False)
    with torch_export_patches() as report:
        got = modeling.sparsemixer(scores, jitter_eps, False)
    assert "phimoe_router_keeps_its_choice" in report.applied
    assert modeling.sparsemixer is not None and [p.applied for p in ROUTER_PATCHES] == [False]
    # the same experts and the same weights: the same ops on the same values
    assert torch.equal(got[1], expected[1])
    torch.testing.assert_close(got[0], expected[0], atol=0, rtol=0)
