"""Loading a model and its tokenizer and turning prompts into token ids, for the sub-commands.

Example::

    model, tokenizer = load_model("tiny:llama")
    batch = encode_prompts(tokenizer, ["def f(x):", "Hello"], chat=False)
    batch.input_ids.shape, batch.seconds
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from diag.cli.args import check_model_name


def load_model(name_or_path: str) -> tuple[Any, Any]:
    """Loads ``(model, tokenizer)`` with :func:`diag.models.load_pretrained`, the model in
    eval mode and the tokenizer ready for batches (left padding, a pad token)."""
    # imported here: transformers is loaded when a model is, not with the CLI
    from diag.models import load_pretrained

    check_model_name(name_or_path)
    # load_pretrained shows its own progress bars while it fetches and converts
    model, tokenizer = load_pretrained(os.path.expanduser(name_or_path))
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


@dataclass
class EncodedPrompts:
    """A left-padded batch of prompts and the time the tokenizer took."""

    texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    seconds: float

    @property
    def num_input_tokens(self) -> list[int]:
        """Number of real (non-padding) tokens of every prompt."""
        return [int(n) for n in self.attention_mask.sum(dim=1)]

    def select(self, index: int) -> EncodedPrompts:
        """The prompt ``index`` alone, without its left padding."""
        mask = self.attention_mask[index].bool()
        return EncodedPrompts(
            texts=[self.texts[index]],
            input_ids=self.input_ids[index][mask].unsqueeze(0),
            attention_mask=torch.ones((1, int(mask.sum())), dtype=self.attention_mask.dtype),
            seconds=0.0,
        )


def encode_prompts(tokenizer: Any, prompts: list[str], chat: bool = False) -> EncodedPrompts:
    """Tokenizes ``prompts`` into one left-padded batch; with ``chat`` every prompt becomes
    a user message formatted by the tokenizer's chat template."""
    if not prompts:
        raise ValueError("no prompt given; pass --prompt TEXT")
    begin = time.perf_counter()
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "--chat needs a tokenizer with a chat template and this one has none; "
                "drop --chat to use the prompts as raw text"
            )
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        # the template already holds the special tokens
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    else:
        texts = list(prompts)
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
    seconds = time.perf_counter() - begin
    input_ids = encoded["input_ids"]
    attention_mask = encoded.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if input_ids.shape[1] == 0 or bool((attention_mask.sum(dim=1) == 0).any()):
        raise ValueError("a prompt gives no token once tokenized; give a non-empty prompt")
    return EncodedPrompts(list(prompts), input_ids, attention_mask, seconds)
