"""diag.compat.moe_blocks: which experts the installed transformers lets diag export,
and the refusal of the others before anything is traced."""

from __future__ import annotations

import pytest
import torch

from diag.compat import moe_blocks
from diag.export import export_causal_lm
from diag.models import get_untrained_model_with_inputs
from unittests.conftest import MOE_ARCHITECTURES

#: the families whose 4.57 experts no patch replaces, with the class the message names
REFUSED_ON_457 = {"gpt_oss": "GptOssExperts", "granitemoe": "GraniteMoeParallelExperts",
                  "phimoe": "PhimoeSparseMoeBlock"}  # fmt: skip


def test_the_refused_classes_are_data_of_the_module():
    assert {c: f for c, (f, _) in moe_blocks.UNEXPORTABLE_EXPERTS.items()} == {
        c: f for f, c in REFUSED_ON_457.items()
    }
    assert set(moe_blocks.LOOPED_EXPERT_BLOCKS) | set(REFUSED_ON_457) == set(MOE_ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(REFUSED_ON_457))
def test_unexportable_experts_refused_with_family_and_class(name, monkeypatch):
    model = get_untrained_model_with_inputs(name)["model"]
    if moe_blocks.experts_interface() is not None:
        # 5.x: every family goes through the experts interface, none refused
        assert moe_blocks.unexportable_experts(model) is None
        if not any(type(m).__name__ == REFUSED_ON_457[name] for m in model.modules()):
            pytest.skip(f"{REFUSED_ON_457[name]} is not a module of {name} in this release")
        # what 4.57 answers: the same model seen without the interface
        monkeypatch.setattr(moe_blocks, "experts_interface", lambda: None)
    with pytest.raises(TypeError) as info:
        export_causal_lm(model, verify=False)
    message = str(info.value)
    assert f"the {name} experts" in message and REFUSED_ON_457[name] in message
    assert "transformers >= 5.23" in message


def test_dense_models_are_not_refused():
    model = get_untrained_model_with_inputs("llama")["model"]
    assert moe_blocks.unexportable_experts(model) is None


def test_float64_copy_runs_the_experts_and_leaves_the_model_alone():
    # transformers 5's default grouped_mm has no float64 kernel: the copy runs eager
    model = get_untrained_model_with_inputs("phimoe")["model"]
    before = getattr(model.config, "_experts_implementation", None)
    exact = moe_blocks.float64_copy(model)
    assert next(exact.parameters()).dtype == torch.float64
    assert getattr(model.config, "_experts_implementation", None) == before
    ids = torch.tensor([[3, 5, 7, 11, 13, 17]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        got = exact(input_ids=ids).logits
    # float32 logits of a 2-layer, hidden-128 model against float64: sums of 128
    # products rounded at each layer, far below 1e-4 (a wrong expert moves them by ~1)
    torch.testing.assert_close(got.float(), expected, atol=1e-4, rtol=0)
