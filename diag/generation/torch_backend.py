"""The torch :class:`~diag.generation.backend.StepBackend`: one forward of a
transformers causal LM with a ``DynamicCache``."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import DynamicCache

from diag.compat.beam_search import reorder_cache
from diag.compat.transformers_api import (
    forward_parameters,
    new_dynamic_cache,
    output_cache,
    require_cache_argument,
)


def model_vocab_size(model: torch.nn.Module) -> int | None:
    """The vocabulary size of a transformers causal LM: its (text) config's, else the
    rows of its output embedding; None when neither says.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model_vocab_size(LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=16,
    ...     intermediate_size=32, num_attention_heads=2, vocab_size=20)))
    20
    """
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text_config, "vocab_size", None)
    if vocab is None:
        emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        vocab = emb.weight.shape[0] if emb is not None else None
    return int(vocab) if vocab is not None else None


class TorchBackend:
    """Runs one step of a transformers ``*ForCausalLM`` model.

    The cache is a ``DynamicCache`` created at the prefill and passed back explicitly
    at every decode step. Only the last position's logits are
    computed (``logits_to_keep=1``) when the model accepts it. Like
    ``model.generate``, the attention mask is dropped when the prompt has no padding
    (the model then takes its faster causal path); this is decided at the prefill, so
    one backend runs one generation at a time.

    Example::

        backend = TorchBackend(model)
        logits, past = backend.prefill(ids, mask, prompt_position_ids(mask))
        logits, past = backend.decode(logits.argmax(-1, keepdim=True), longer_mask, next_pos, past)
    """

    def __init__(self, model: torch.nn.Module):
        if not callable(model) or not hasattr(model, "config"):
            hint = (
                "; for an ONNX file or folder, call diag.onnx_generate"
                if isinstance(model, (str, os.PathLike))
                else ""
            )
            raise TypeError(
                f"TorchBackend expects a transformers causal LM (a model with a config), "
                f"got {type(model).__name__}{hint}."
            )
        self.model = model
        self.vocab_size: int | None = model_vocab_size(model)
        params = forward_parameters(model)
        # "cache" from transformers 5.24 on, "past_key_values" before (the old name warns)
        self._cache_argument = require_cache_argument(model, "the torch backend")
        self._extra: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in params:
            self._extra["logits_to_keep"] = 1
        self._accepts_position_ids = "position_ids" in params
        self._use_mask = True

    @property
    def input_device(self) -> torch.device | None:
        """Where the loop keeps the ids, the mask and the tokens: the model's device
        (see :class:`~diag.generation.backend.StepBackend`)."""
        return getattr(self.model, "device", None)

    def new_cache(self) -> DynamicCache:
        """An empty cache laid out for this model's layers (sliding-window and hybrid
        layers of gemma2/3... follow the config)."""
        return new_dynamic_cache(self.model.config)

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, DynamicCache]:
        """The prompt on a new cache (see :class:`~diag.generation.backend.StepBackend`)."""
        # transformers' generate drops an all-ones mask: same numerics, faster path
        self._use_mask = not bool((attention_mask == 1).all())
        return self.decode(input_ids, attention_mask, position_ids, self.new_cache())

    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: DynamicCache,
    ) -> tuple[torch.Tensor, DynamicCache]:
        """``input_ids`` after ``past`` (see :class:`~diag.generation.backend.StepBackend`)."""
        kwargs = dict(self._extra)
        kwargs[self._cache_argument] = past
        if self._accepts_position_ids:
            kwargs["position_ids"] = position_ids
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask if self._use_mask else None,
                **kwargs,
            )
        return out.logits[:, -1, :].float(), output_cache(out)

    def reorder(self, past: DynamicCache, rows: torch.Tensor) -> DynamicCache:
        """The cache following the rows of a beam search step (see
        :meth:`~diag.generation.backend.StepBackend.reorder`): transformers' own
        reorder of the cache object, as ``model.generate`` calls it."""
        return reorder_cache(self.model, past, rows.to(self.input_device or rows.device))
