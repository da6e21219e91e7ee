"""Loading a model and its tokenizer and turning prompts into token ids, for the sub-commands.

Example::

    model, tokenizer = load_model("tiny:llama")
    input_ids, attention_mask = encode_prompts(tokenizer, ["def f(x):", "Hello"], chat=False)
"""

from __future__ import annotations

import os
from typing import Any

import torch

from diag.cli.args import check_model_name
from diag.generation.prompt import prepare_prompt


def load_model(name_or_path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """Loads ``(model, tokenizer)`` with :func:`diag.models.load_pretrained`, the model in
    eval mode and the tokenizer ready for batches (left padding, a pad token); ``dtype``:
    ``"auto"`` (the checkpoint's), ``"float32"``, ``"float16"`` or ``"bfloat16"``."""
    # imported here: transformers is loaded when a model is, not with the CLI
    from diag.models import load_pretrained

    check_model_name(name_or_path)
    # load_pretrained shows its own progress bars while it fetches and converts
    model, tokenizer = load_pretrained(
        os.path.expanduser(name_or_path), dtype=dtype if dtype == "auto" else getattr(torch, dtype)
    )
    model.eval()
    prepare_tokenizer(tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (a decoder continues after the last token of every row) and a pad
    token (many causal LMs have none: the end-of-sequence token is used then)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "the tokenizer has neither a pad token nor an eos token; "
                "it cannot pad a batch of prompts"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids the model stops on: its generation config's, else the
    tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def encode_prompts(
    tokenizer: Any, prompts: list[str], chat: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The left-padded ``(input_ids, attention_mask)`` of ``prompts``, by
    :func:`diag.generation.prepare_prompt`; with ``chat``, every prompt is a user
    message formatted by the tokenizer's chat template.

    >>> model, tokenizer = load_model("tiny:llama")
    >>> ids, mask = encode_prompts(tokenizer, ["def f(x):", "Hi"])
    >>> ids.shape[0], mask[1, 0].item()  # "Hi" is the shorter: padded on the left
    (2, 0)
    """
    if not prompts:
        raise ValueError("no prompt given; pass --prompt TEXT")
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "--chat needs a tokenizer with a chat template and this one has none; "
            "drop --chat to use the prompts as raw text"
        )
    prompt: Any = [[{"role": "user", "content": p}] for p in prompts] if chat else list(prompts)
    input_ids, attention_mask = prepare_prompt(prompt, None, tokenizer)
    if input_ids.shape[1] == 0 or bool((attention_mask.sum(dim=1) == 0).any()):
        raise ValueError("a prompt gives no token once tokenized; give a non-empty prompt")
    return input_ids, attention_mask
