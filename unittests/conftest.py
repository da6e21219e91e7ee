"""Fixtures shared by the whole test suite.

Tests that use the real model (SmolLM2-135M-Instruct) take the ``smollm2`` fixture and
are marked ``slow``; CI runs them too.
"""

from __future__ import annotations

import os

import pytest
import torch

# Two cores here: more threads only fight each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Architectures of the offline tiny-model zoo (diag.models). falcon (multi-query),
# deepseek_v3 (latent attention) and gpt_neox (no kv-head attribute) cache other
# heads or head sizes than their config's attributes say.
TINY_ARCHITECTURES = [
    "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gpt2",
    "falcon", "deepseek_v3", "gpt_neox",
]  # fmt: skip


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole module (:func:`diag.ort.generate.single_torch_thread`,
    the setting restored afterwards). Modules of small models or of ``[batch, vocab]``
    rows take it: on a loaded 2-core machine two torch threads spin-waiting on each
    other, or on ONNX Runtime's pool, make every small op many times slower."""
    from diag.ort.generate import single_torch_thread

    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, float32, eval mode."""
    from diag.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m-instruct")
    return model.eval(), tokenizer
