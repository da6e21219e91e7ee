"""The model's generation config in the file's metadata: :func:`diag.onnx_generate`
reads it as its defaults (eos, pad, sampling), as ``model.generate`` reads
``model.generation_config``.

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> json.loads(generation_config_json(model))["eos_token_id"]
    2
"""

from __future__ import annotations

import json

import onnx_ir as ir
import torch

from diag import contract


def generation_config_json(model: torch.nn.Module) -> str | None:
    """The model's ``generation_config`` as compact JSON, only the fields it sets
    (``to_diff_dict``: ``GenerationConfig(**json.loads(text))`` gives it back), or None
    when the model has none."""
    config = getattr(model, "generation_config", None)
    if config is None or not hasattr(config, "to_json_string"):
        return None
    # to_json_string turns what json cannot write (sets, nested configs) into plain values
    content = json.loads(config.to_json_string(use_diff=True))
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def write_generation_config(model_ir: ir.Model, text: str | None) -> None:
    """Stores ``text`` (:func:`generation_config_json`) in the model's metadata."""
    if text is not None:
        model_ir.metadata_props[contract.GENERATION_CONFIG_METADATA] = text


__all__ = ["generation_config_json", "write_generation_config"]
