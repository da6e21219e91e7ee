"""``diag.generate``: ``model.generate`` written out, on top of the shared loop.

Same answers as ``model.generate`` (greedy and seeded sampling, batches, eos), with
the loop visible in :mod:`diag.generation.decoding` and the model behind a
:class:`~diag.generation.torch_backend.TorchBackend`.
"""

from __future__ import annotations

from typing import Any

import torch

from diag.generation.decoding import decode
from diag.generation.options import UNSET, resolve_options
from diag.generation.result import GenerateResult
from diag.generation.streaming import GenerationStream, stream_decode
from diag.generation.torch_backend import TorchBackend


def _is_message(x: Any) -> bool:
    return isinstance(x, dict) and "role" in x and "content" in x


def _is_conversation(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_message(m) for m in x)


def prepare_prompt(
    prompt: Any, attention_mask: torch.Tensor | None, tokenizer: Any | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids and mask from ids, text(s), chat message(s) or a tokenizer output.

    Text is tokenized with left padding (what decoder-only generation needs); chat
    messages go through ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.

    Example::

        ids, mask = prepare_prompt(["Hi", "Hello there"], None, tokenizer)
        ids, mask = prepare_prompt([{"role": "user", "content": "Hi"}], None, tokenizer)
    """
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


def _model_defaults(model: Any) -> Any:
    return getattr(model, "generation_config", None)


def generate(
    model: torch.nn.Module,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int | None = UNSET,
    eos_token_id: int | list[int] | None = UNSET,
    pad_token_id: int | None = UNSET,
    do_sample: bool | None = UNSET,
    temperature: float | None = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float | None = UNSET,
    num_return_sequences: int = UNSET,
    generator: torch.Generator | None = None,
    output_scores: bool | None = UNSET,
    output_logits: bool | None = UNSET,
    streamer: Any = None,
    generation_config: Any = None,
    tokenizer: Any = None,
    return_result: bool = False,
    stream: bool = False,
    **kwargs: Any,
) -> torch.Tensor | GenerateResult | GenerationStream:
    """Generates like ``model.generate`` with the loop written out.

    The decoding parameters keep transformers' ``GenerationConfig`` names; other
    ``GenerationConfig`` names (``min_new_tokens``, ``no_repeat_ngram_size``,
    ``min_p``, ``max_length``...) go through ``kwargs``. A parameter left to
    :data:`diag.UNSET` (the default) is not given and takes the value
    ``model.generate`` would take: the ``generation_config`` argument, then
    ``model.generation_config``, then transformers' defaults (``top_k=50`` when
    sampling, 20 new tokens). Any value given, ``None`` included, means what it means
    to ``model.generate``: ``eos_token_id=None`` generates past the model's eos,
    ``top_k=None`` (like ``temperature``, ``top_p``, ``repetition_penalty``,
    ``min_new_tokens``... set to None) turns that processor off, ``do_sample=None`` is
    greedy, ``max_new_tokens=None`` falls back on ``max_length``, ``pad_token_id=None``
    on the first eos; ``num_return_sequences=None`` raises, as ``model.generate`` does.

    ``input_ids`` may also be text, a list of texts, chat messages or a list of
    conversations when ``tokenizer`` is given. ``generator`` makes sampling use that
    ``torch.Generator`` instead of the global seed.

    Returns the ``[batch * num_return_sequences, prompt + new]`` LongTensor
    ``model.generate`` returns; the :class:`GenerateResult` (scores, finish reasons,
    counts, timings) when ``return_result=True``; a
    :class:`~diag.generation.streaming.GenerationStream` of step events when
    ``stream=True``.

    Example::

        ids = tokenizer("def fib(n):", return_tensors="pt").input_ids
        tokens = diag.generate(model, ids, max_new_tokens=50)
        torch.equal(tokens, model.generate(ids, max_new_tokens=50))  # True
        no_eos = diag.generate(model, ids, max_new_tokens=50, eos_token_id=None)  # all 50
        torch.manual_seed(0)
        res = diag.generate(model, "def fib(n):", tokenizer=tokenizer, do_sample=True,
                            top_p=0.9, max_new_tokens=50, return_result=True)
        res.finish_reasons, res.texts(tokenizer)
    """
    ids, mask = prepare_prompt(input_ids, attention_mask, tokenizer)
    options = resolve_options(
        generation_config,
        _model_defaults(model),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_return_sequences=num_return_sequences,
        output_scores=output_scores,
        output_logits=output_logits,
        **kwargs,
    )
    device = getattr(model, "device", None)
    if device is not None and isinstance(ids, torch.Tensor) and ids.device != device:
        # the loop keeps its buffers next to the ids: put them where the model runs
        ids = ids.to(device)
        mask = mask.to(device) if isinstance(mask, torch.Tensor) else mask
    backend = TorchBackend(model)
    if stream:
        if streamer is not None:
            raise ValueError(
                "use either stream=True (an iterator) or streamer= (a callback), not both."
            )
        return stream_decode(backend, ids, mask, options, generator=generator, tokenizer=tokenizer)
    if streamer is not None and tokenizer is not None and not hasattr(streamer, "put"):
        # a plain callback gets the text deltas too
        s = stream_decode(backend, ids, mask, options, generator=generator, tokenizer=tokenizer)
        for event in s:
            streamer(event)
        result = s.result
    else:
        result = decode(backend, ids, mask, options, generator=generator, streamer=streamer)
    return result if return_result else result.sequences


def stream(
    model: torch.nn.Module,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> GenerationStream:
    """``generate(..., stream=True)``: an iterator of step events.

    Example::

        s = diag.generation.stream(model, "Once upon", tokenizer=tok, max_new_tokens=30)
        text = "".join(e.text[0] for e in s)
        s.result.sequences  # what generate returns
    """
    return generate(model, input_ids, attention_mask, stream=True, **kwargs)
