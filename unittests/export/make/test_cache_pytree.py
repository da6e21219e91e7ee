"""diag.export.make.cache_pytree: what the patches register is removed from every pytree
registry torch keeps, so a second export in one process registers it again (with
optree installed, the second one failed with optree's "already registered in namespace
'torch'")."""

from __future__ import annotations

import torch
import torch.utils._pytree as pytree
from transformers.cache_utils import DynamicCache, DynamicLayer

from diag.compat import torch_pytree
from diag.export import torch_export_patches
from diag.helpers.cache_helper import cache_to_list, make_dynamic_cache


class _Total(torch.nn.Module):
    def forward(self, cache):
        return torch.cat([t for pair in cache_to_list(cache) for t in pair], dim=2).sum(2)


def test_two_exports_in_one_process_register_and_remove_the_caches_each_time():
    cache = make_dynamic_cache([(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))] * 2)
    past = torch.export.Dim("past", min=1, max=8)
    assert torch_pytree.registries_holding(DynamicCache) == []
    for _ in range(2):
        with torch_export_patches(patch_torch=False) as report:
            assert "DynamicCache" in report.pytree_nodes
            # torch.export imports torch's C++ pytree when optree is installed:
            # the registration reaches optree's registry
            holding = torch_pytree.registries_holding(DynamicCache)
            assert holding == torch_pytree.registries()
            ep = torch.export.export(
                _Total(), (cache,), dynamic_shapes=([{2: past}] * 4,), strict=False
            )
        placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
        assert len(placeholders) == 4
        assert not isinstance(placeholders[0].meta["val"].shape[2], int)
        for cls in (DynamicCache, DynamicLayer):
            assert torch_pytree.registries_holding(cls) == []
        assert DynamicCache not in pytree.SUPPORTED_NODES
