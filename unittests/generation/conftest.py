"""Fixtures of the generation tests: tiny models (built once per session) and prompts."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(arch)`` -> the tiny untrained model of that architecture (cached)."""
    from diag.models import get_untrained_model_with_inputs

    cache: dict[str, torch.nn.Module] = {}

    def get(arch: str) -> torch.nn.Module:
        if arch not in cache:
            cache[arch] = get_untrained_model_with_inputs(arch)["model"]
        return cache[arch]

    return get


def _random_prompt(length: int, seed: int, vocab: int = 49152) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (1, length), generator=g)


def _left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(r.shape[1] for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.shape[1] :] = r[0]
        mask[i, width - r.shape[1] :] = 1
    return ids, mask


@pytest.fixture(scope="session")
def random_prompt():
    """``random_prompt(length, seed)`` -> ``[1, length]`` random ids (>= 3: clear of
    bos/eos/pad)."""
    return _random_prompt


@pytest.fixture(scope="session")
def left_pad():
    """``left_pad(rows, pad_id)`` -> left-padded ``(input_ids, attention_mask)``."""
    return _left_pad
