"""diag.export.plan.model: what the plan reads from the model before tracing it."""

from __future__ import annotations

import pytest
import torch

from diag.export.plan.model import (
    check_causal_lm,
    model_name,
    takes_logits_to_keep,
    takes_position_ids,
)
from diag.models import get_untrained_model_with_inputs


class _Plain(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None):
        return input_ids


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_causal_lm_of_the_zoo_passes(arch):
    model = get_untrained_model_with_inputs(arch)["model"]
    check_causal_lm(model)
    assert model_name(model) == model.config.model_type
    assert takes_logits_to_keep(model) and takes_position_ids(model)


def test_a_model_that_is_not_a_causal_lm_is_refused_with_what_to_do():
    with pytest.raises(TypeError, match="expects a torch causal LM.*load_pretrained"):
        check_causal_lm("model.onnx")
    with pytest.raises(TypeError, match="has no `config`.*diag.to_onnx"):
        check_causal_lm(_Plain())
    assert not takes_logits_to_keep(_Plain()) and not takes_position_ids(_Plain())


def test_the_name_is_safe_in_a_path():
    model = get_untrained_model_with_inputs("llama")["model"]
    model.config._name_or_path = "/models/HuggingFaceTB/SmolLM2 135M:instruct/"
    assert model_name(model) == "SmolLM2-135M-instruct"
    assert model_name(_Plain()) == "_Plain"
