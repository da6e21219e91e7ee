"""The mixture-of-experts patches: inside torch_export_patches the experts compute what
they compute outside (on each release, the patch of that release), and the graph
traced with them has no op the ONNX exporter lacks."""

from __future__ import annotations

import pytest
import torch

from diag.compat.moe_blocks import experts_interface
from diag.export import torch_export_patches
from diag.export.make.patches import EXPERTS_PATCHES
from diag.models import get_untrained_model_with_inputs

# float32 logits of a 2-layer model: the patched experts sum the same products in
# another order or over other row counts (matmul kernels), hidden 128 x eps per product
# and a few products per layer, far below the 1e-4 the export validation allows
ATOL = 1e-4


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("name", ["qwen3_moe", pytest.param("qwen2_moe", marks=pytest.mark.pinned)])
def test_patched_experts_compute_what_the_originals_do(name):
    # qwen2_moe: the shared expert and its sigmoid gate on top of the routed ones
    model = get_untrained_model_with_inputs(name)["model"]
    ids = torch.randint(3, 1000, (3, 11), generator=torch.Generator().manual_seed(0))
    expected = _logits(model, ids)
    with torch_export_patches() as report:
        patched = _logits(model, ids)
    applied = [p.name for p in EXPERTS_PATCHES if p.name in report.applied]
    if experts_interface() is not None:
        assert applied == ["experts_gathered"]
    else:
        assert applied == [p.name for p in EXPERTS_PATCHES if p.name.startswith("experts_dense")]
    torch.testing.assert_close(patched, expected, atol=ATOL, rtol=0)
    # the routing chose several experts over these tokens: a wrong gather would show
    assert not torch.equal(expected[:, 0], expected[:, 1])


def test_experts_gathered_answers_batched_mm_whatever_the_config_says():
    interface = experts_interface()
    if interface is None:
        pytest.skip("transformers 4.57 has no experts interface (experts_dense instead)")
    default = object()
    with torch_export_patches():
        for asked in ("grouped_mm", "eager", "batched_mm"):
            assert interface.get_interface(asked, default) is interface["batched_mm"]
    assert interface.get_interface("grouped_mm", default) is interface["grouped_mm"]


def test_dense_experts_weight_unchosen_experts_by_zero():
    if experts_interface() is not None:
        pytest.skip("transformers 5 calls the experts interface (experts_gathered instead)")
    from diag.export.make.patches.experts_patches import dense_experts_forward

    block = get_untrained_model_with_inputs("qwen3_moe")["model"].model.layers[0].mlp
    hidden = torch.randn(2, 5, block.gate.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, expected_logits = block(hidden)
        ours, logits = dense_experts_forward(block, hidden)
        # an expert no token chose changes nothing when its weights do
        chosen = torch.topk(expected_logits, block.top_k, dim=-1).indices.unique()
        unused = [e for e in range(block.num_experts) if e not in chosen.tolist()]
        if unused:
            block.experts[unused[0]].down_proj.weight.mul_(3.0)
            again, _ = dense_experts_forward(block, hidden)
            torch.testing.assert_close(again, ours, atol=0, rtol=0)
    torch.testing.assert_close(logits, expected_logits, atol=0, rtol=0)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
