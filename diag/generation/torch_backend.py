"""The torch :class:`~diag.generation.backend.StepBackend`: one forward of a
transformers causal LM with a ``DynamicCache``."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache


class TorchBackend:
    """Runs one step of a transformers ``*ForCausalLM`` model.

    The cache is a ``DynamicCache`` created at the prefill (``past=None``) and passed
    back explicitly at every decode step. Only the last position's logits are
    computed (``logits_to_keep=1``) when the model accepts it. Like
    ``model.generate``, the attention mask is dropped when the prompt has no padding
    (the model then takes its faster causal path); this is decided at the prefill, so
    one backend runs one generation at a time.

    Example::

        backend = TorchBackend(model)
        logits, past = backend(ids, mask, prompt_position_ids(mask), None)
        logits, past = backend(logits.argmax(-1, keepdim=True), longer_mask, next_pos, past)
    """

    def __init__(self, model: torch.nn.Module):
        if not callable(model) or not hasattr(model, "config"):
            raise TypeError(
                f"TorchBackend expects a transformers causal LM (a model with a config), "
                f"got {type(model).__name__}."
            )
        self.model = model
        config = model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        vocab = getattr(text_config, "vocab_size", None)
        if vocab is None:
            emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            vocab = emb.weight.shape[0] if emb is not None else None
        self.vocab_size: int | None = int(vocab) if vocab is not None else None
        params = inspect.signature(model.forward).parameters
        self._extra: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in params:
            self._extra["logits_to_keep"] = 1
        self._accepts_position_ids = "position_ids" in params
        self._use_mask = True
        # the cache needs the config for sliding-window / hybrid layers (gemma2/3, ...)
        self._cache_takes_config = "config" in inspect.signature(DynamicCache.__init__).parameters

    def new_cache(self) -> DynamicCache:
        """An empty cache laid out for this model's layers."""
        if self._cache_takes_config:
            config = self.model.config
            if hasattr(config, "get_text_config"):
                config = config.get_text_config(decoder=True)
            return DynamicCache(config=config)
        return DynamicCache()

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: DynamicCache | None,
    ) -> tuple[torch.Tensor, DynamicCache]:
        if past is None:
            # transformers' generate drops an all-ones mask: same numerics, faster path
            self._use_mask = not bool((attention_mask == 1).all())
            past = self.new_cache()
        kwargs = dict(self._extra)
        if self._accepts_position_ids:
            kwargs["position_ids"] = position_ids
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask if self._use_mask else None,
                past_key_values=past,
                **kwargs,
            )
        return out.logits[:, -1, :].float(), out.past_key_values
