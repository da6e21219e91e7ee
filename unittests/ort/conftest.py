"""Fixtures of the ONNX Runtime tests (the hand-built ``bigram_lm`` models live in the
root conftest: the contract tests use them too)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """The torch side of these tests works on ``[batch, vocab]`` rows and tiny models:
    one thread leaves the cores to ONNX Runtime's own thread pool."""
    yield
