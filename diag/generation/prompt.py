"""The prompt of a generation: token ids and mask from what a user holds.

:func:`prepare_prompt` is the one place both fronts (:func:`diag.generate`,
:func:`diag.onnx_generate`) and the command line turn a prompt into ``(input_ids,
attention_mask)``: token ids (a tensor or a numpy array), a tokenizer output, text, a
list of texts, chat messages or a list of conversations. Text is left-padded, what a
decoder-only model needs to continue every row after its last token.

Example:

>>> import torch
>>> ids, mask = prepare_prompt(torch.tensor([[5, 6, 7]]), None, None)
>>> ids.tolist(), mask
([[5, 6, 7]], None)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _is_message(x: Any) -> bool:
    return isinstance(x, dict) and "role" in x and "content" in x


def _is_conversation(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_message(m) for m in x)


def _as_torch(x: Any, what: str) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (int, float)) and not isinstance(x, bool) and what == "attention_mask":
        raise TypeError(
            f"attention_mask must be a tensor, got {type(x).__name__} {x!r}; the third "
            f"positional argument is the attention mask: pass eos_token_id={x!r} by keyword."
        )
    return x


def prepare_prompt(
    prompt: Any, attention_mask: torch.Tensor | None, tokenizer: Any | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids and mask from ids, text(s), chat message(s) or a tokenizer output.

    Ids (a tensor, or a numpy array turned into one) come back as they are, with the
    mask given (None: the decoding loop infers it). Text is tokenized with left padding;
    chat messages go through ``tokenizer.apply_chat_template(...,
    add_generation_prompt=True)``.

    >>> import torch
    >>> prepare_prompt({"input_ids": torch.tensor([[1, 2]]),
    ...                 "attention_mask": torch.tensor([[0, 1]])}, None, None)[1].tolist()
    [[0, 1]]
    >>> prepare_prompt("Hi", None, None)
    Traceback (most recent call last):
    ...
    ValueError: a text or chat prompt needs a tokenizer: pass tokenizer=... (e.g. from diag.load_pretrained) or give token ids.

    With a tokenizer::

        ids, mask = prepare_prompt(["Hi", "Hello there"], None, tokenizer)
        ids, mask = prepare_prompt([{"role": "user", "content": "Hi"}], None, tokenizer)
    """
    prompt = _as_torch(prompt, "input_ids")
    attention_mask = _as_torch(attention_mask, "attention_mask")
    if isinstance(prompt, torch.Tensor):
        return prompt, attention_mask
    if hasattr(prompt, "keys") and "input_ids" in prompt:  # BatchEncoding or dict
        mask = prompt.get("attention_mask") if attention_mask is None else attention_mask
        return prompt["input_ids"], mask
    is_text = isinstance(prompt, str) or (
        isinstance(prompt, (list, tuple))
        and len(prompt) > 0
        and all(isinstance(p, str) for p in prompt)
    )
    is_chat = _is_conversation(prompt) or (
        isinstance(prompt, (list, tuple))
        and len(prompt) > 0
        and all(_is_conversation(c) for c in prompt)
    )
    if not (is_text or is_chat):
        raise TypeError(
            "the prompt must be a LongTensor of token ids, a string, a list of strings, a list "
            "of chat messages ({'role': ..., 'content': ...}) or a list of conversations; got "
            f"{type(prompt).__name__}."
        )
    if tokenizer is None:
        raise ValueError(
            "a text or chat prompt needs a tokenizer: pass tokenizer=... "
            "(e.g. from diag.load_pretrained) or give token ids."
        )
    if attention_mask is not None:
        raise ValueError(
            "attention_mask is computed from the text; do not pass one with a text prompt."
        )
    if is_chat:
        conversations = [prompt] if _is_conversation(prompt) else list(prompt)
        texts = [
            tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in conversations
        ]
        add_special_tokens = False  # the template already holds them
    else:
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        add_special_tokens = True
    if tokenizer.pad_token_id is None and len(texts) > 1:
        raise ValueError(
            "the tokenizer has no pad token, needed to batch prompts of different lengths; "
            "set tokenizer.pad_token = tokenizer.eos_token first."
        )
    encoded = tokenizer(
        texts,
        return_tensors="pt",
        padding=len(texts) > 1,
        padding_side="left",
        add_special_tokens=add_special_tokens,
    )
    return encoded["input_ids"], encoded["attention_mask"]
