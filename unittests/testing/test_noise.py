"""diag.testing's tolerance follows the narrowest dtype of the compared sides."""

from __future__ import annotations

import pytest
import torch

import diag.testing
from diag.diagnose.sides import narrowest_dtype
from diag.export import export_causal_lm
from diag.generation import open_steps
from diag.models import get_untrained_model_with_inputs
from diag.testing.noise import tolerance_of


def test_float16_export_is_close_to_its_float32_model_within_float16_rounding(tmp_path):
    model = get_untrained_model_with_inputs("llama")["model"]
    half = export_causal_lm(model, tmp_path / "model.onnx", dtype="float16", verify=False)
    torch_side, onnx_side = open_steps(model), open_steps(half)
    assert narrowest_dtype(torch_side, onnx_side) == torch.float16
    hidden = model.config.hidden_size
    # float16 rounding over the hidden size, far above float32's 1e-4
    assert tolerance_of(None, None, torch_side, onnx_side) > 100 * tolerance_of(
        None, None, torch_side
    )
    assert tolerance_of(None, None, torch_side, onnx_side) == pytest.approx(
        2 * hidden * 2**-11 / (1 - hidden * 2**-11)
    )
    worst = diag.testing.assert_logits_close(model, half, [[5, 6, 7, 8]], max_new_tokens=5)
    assert 0 < worst < tolerance_of(None, None, torch_side, onnx_side)
    # the same export against the float32 bound: the rounding of float16 is beyond it
    with pytest.raises(AssertionError):
        diag.testing.assert_logits_close(
            model, half, [[5, 6, 7, 8]], max_new_tokens=5, atol=1e-4, noise_floor=False
        )
