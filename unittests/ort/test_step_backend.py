"""as_step_backend: one StepBackend from a torch model, an ONNX model or session, or a
backend already."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from diag.generation.torch_backend import TorchBackend
from diag.ort import OrtBackend, as_step_backend


@pytest.fixture(scope="module")
def lm(bigram_lm):
    return bigram_lm(num_layers=1, vocab=8, heads=1, head_dim=2, seed=3)


def test_onnx_model_session_and_backend(lm):
    model, table = lm
    backend = as_step_backend(model)
    assert isinstance(backend, OrtBackend) and backend.vocab_size == 8
    ids = torch.tensor([[5]])
    logits, _ = backend(ids, torch.ones_like(ids), torch.zeros_like(ids), None)
    np.testing.assert_array_equal(logits[0].numpy(), table[5])
    assert as_step_backend(backend) is backend
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wrapped = as_step_backend(session)
    assert isinstance(wrapped, OrtBackend) and wrapped.session is session


def test_torch_model_and_any_step_backend():
    from diag.models.untrained import get_tiny_config, make_untrained_model

    model = make_untrained_model(get_tiny_config("llama"), seed=0)
    backend = as_step_backend(model)
    assert isinstance(backend, TorchBackend) and backend.model is model

    class Scripted:
        vocab_size = 3

        def __call__(self, input_ids, attention_mask, position_ids, past):
            return torch.zeros(input_ids.shape[0], 3), past

    scripted = Scripted()
    assert as_step_backend(scripted) is scripted


def test_anything_else_says_what_it_takes():
    with pytest.raises(
        TypeError, match=r"^onnx_model_or_session must be .*InferenceSession.* got int"
    ):
        as_step_backend(42, what="onnx_model_or_session")
    with pytest.raises(TypeError, match="StepBackend"):
        as_step_backend(lambda *args: None)  # callable, but no vocab_size
