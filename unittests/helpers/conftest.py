"""Configurations shared by the helper tests: small enough to build a model in
milliseconds, real enough for transformers' caches and models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from transformers import Gemma2Config, LlamaConfig


@pytest.fixture
def llama_config() -> Callable[[int], LlamaConfig]:
    """``llama_config(num_layers=2)``: 4 query heads, 2 key/value heads of dimension 8,
    hidden size 32, vocabulary 100."""

    def make(num_layers: int = 2) -> LlamaConfig:
        return LlamaConfig(
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=64,
            vocab_size=100,
        )

    return make


@pytest.fixture
def sliding_config() -> Gemma2Config:
    """Gemma2 with two layers, the first with a sliding window of 4 positions (head
    dimension 8, vocabulary 100)."""
    return Gemma2Config(
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=100,
        head_dim=8,
        sliding_window=4,
    )
