"""open_steps: one Steps (backend, defaults, provenance) from a torch model, an ONNX model
or session, or a backend already."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from diag.generation import open_steps
from diag.generation.torch_backend import TorchBackend
from diag.ort import OrtBackend


@pytest.fixture(scope="module")
def lm(bigram_lm):
    return bigram_lm(num_layers=1, vocab=8, heads=1, head_dim=2, seed=3)


def test_onnx_model_session_and_backend(lm):
    model, table = lm
    steps = open_steps(model)
    backend = steps.backend
    assert isinstance(backend, OrtBackend) and backend.vocab_size == 8
    assert steps.kind == "onnx" and steps.onnx_model is model
    ids = torch.tensor([[5]])
    logits, _ = backend.prefill(ids, torch.ones_like(ids), torch.zeros_like(ids))
    np.testing.assert_array_equal(logits[0].numpy(), table[5])
    assert open_steps(backend).backend is backend and open_steps(steps) is steps
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wrapped = open_steps(session).backend
    assert isinstance(wrapped, OrtBackend) and wrapped.session is session


def test_torch_model_and_any_step_backend():
    from diag.models.untrained import get_tiny_config, make_untrained_model

    model = make_untrained_model(get_tiny_config("llama"), seed=0)
    steps = open_steps(model)
    backend = steps.backend
    assert isinstance(backend, TorchBackend) and backend.model is model
    assert steps.kind == "torch" and steps.defaults is model.generation_config

    class Scripted:
        vocab_size = 3

        def prefill(self, input_ids, attention_mask, position_ids):
            return torch.zeros(input_ids.shape[0], 3), None

        def decode(self, input_ids, attention_mask, position_ids, past):
            return torch.zeros(input_ids.shape[0], 3), past

    scripted = Scripted()
    assert open_steps(scripted).backend is scripted


def test_anything_else_says_what_it_takes():
    with pytest.raises(
        TypeError, match=r"^onnx_model_or_session must be .*InferenceSession.* got int"
    ):
        open_steps(42, what="onnx_model_or_session")
    with pytest.raises(TypeError, match="StepBackend"):
        open_steps(lambda *args: None)  # callable, but no vocab_size
