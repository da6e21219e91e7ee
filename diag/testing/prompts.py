"""The prompts and options of a regression test: prompts encoded into a left-padded
batch (:func:`encode_prompts`), read back (:func:`prompt_rows`), the options as the
record stores them (:func:`options_as_dict`).

Each side (a torch model, an ONNX file or folder, a ModelProto, a session) is opened
by :func:`~diag.generation.steps.open_steps` into a
:class:`~diag.generation.steps.Steps` and decoded by
:func:`~diag.diagnose.sides.generate_side` with the options of
:func:`~diag.diagnose.sides.comparison_options`.

>>> ids, mask = encode_prompts([[5, 6, 7], [8]])
>>> prompt_rows(ids, mask)
[[5, 6, 7], [8]]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from diag.generation.options import DecodingOptions
from diag.generation.prompt import prepare_prompt


def encode_prompts(
    prompts: Any, tokenizer: Any = None, pad_token_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of prompts given as text(s) (with a tokenizer,
    left-padded), a ``[batch, seq]`` tensor, a dict / BatchEncoding or lists of token
    ids (left-padded here with ``pad_token_id``).

    >>> ids, mask = encode_prompts([[5, 6, 7], [8]])
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    if isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], int):
        prompts = [prompts]
    if (
        isinstance(prompts, (list, tuple))
        and prompts
        and all(isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p) for p in prompts)
    ):
        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt is empty: give at least one token per prompt.")
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids, mask
    ids, mask = prepare_prompt(prompts, None, tokenizer)
    if ids.dim() == 1:
        ids = ids[None]
    if mask is None:
        mask = torch.ones_like(ids)
    return ids.long(), mask.long()


def prompt_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """The token ids of every prompt without its padding.

    >>> prompt_rows(torch.tensor([[0, 5, 6]]), torch.tensor([[0, 1, 1]]))
    [[5, 6]]
    """
    return [
        [int(t) for t, m in zip(row.tolist(), keep.tolist(), strict=True) if m]
        for row, keep in zip(input_ids, attention_mask, strict=True)
    ]


def options_as_dict(options: DecodingOptions) -> dict[str, Any]:
    """The resolved options as plain data (what a record stores), without the output
    switches."""
    data = dataclasses.asdict(options)
    data.pop("defaults_used", None)
    for name in ("output_logits", "output_scores"):
        data.pop(name, None)
    return data


__all__ = ["encode_prompts", "options_as_dict", "prompt_rows"]
