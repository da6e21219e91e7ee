"""The metadata entries of diag's contract: what :func:`diag.export_causal_lm` stores
in the ONNX model besides the graph, and how an engine reads it back.

Example::

    config = metadata_generation_config(session)  # None when the model has none
    config["eos_token_id"]
    # 2
"""

from __future__ import annotations

import json
from typing import Any

#: key of the ONNX metadata entry holding the model's generation config (JSON), read as
#: the defaults of the decoding options, like ``model.generation_config`` for torch
GENERATION_CONFIG_METADATA = "generation_config"

#: key of the ONNX metadata entry holding the quantization options of a quantized export
#: (JSON, :class:`diag.export.plan.quantize_options.QuantizeOptions`); absent from a float export
QUANTIZATION_METADATA = "quantization"

#: key of the ONNX metadata entry of a static cache export (JSON ``{"max_length": N}``,
#: :data:`diag.contract.layout.STATIC_LAYOUT`); absent from a dynamic one
STATIC_CACHE_METADATA = "static_cache"


#: key of the ONNX metadata entry of an export whose attention is ONNX Runtime's
#: ``GroupQueryAttention`` (JSON ``{"op": "GroupQueryAttention", "padding": "right"}``,
#: :data:`diag.contract.layout.GQA_LAYOUT`); absent from an opset-23 ``Attention`` one
ATTENTION_METADATA = "attention"

#: key of the ONNX metadata entry giving the float dtype of an export and of the model it
#: came from (JSON ``{"dtype": "float16", "model_dtype": "bfloat16"}``,
#: :mod:`diag.export.plan.dtype`); absent from the files written before it existed
DTYPE_METADATA = "dtype"

#: key of a node's metadata (like the exporter's ``pkg.torch.onnx.name_scopes``) giving
#: the module scopes of the node's *last* output when that output belongs to another
#: module than the node: a fused residual sum + norm computes the end of one layer (the
#: sum) and the start of the next (the norm); :func:`diag.localize_layer` reads it
OUTPUT_SCOPES_METADATA = "diag.last_output_name_scopes"


def metadata_json(session: Any, key: str) -> dict[str, Any] | None:
    """The JSON object stored under ``key`` in the metadata of ``session`` (an
    ``onnxruntime.InferenceSession``), or None when there is none (or it is not a JSON
    object: a file another tool wrote may use the key for something else)."""
    text = session.get_modelmeta().custom_metadata_map.get(key)
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def metadata_generation_config(session: Any) -> dict[str, Any] | None:
    """The generation config stored in the metadata of ``session``, as a dict, or None."""
    return metadata_json(session, GENERATION_CONFIG_METADATA)


def metadata_quantization(session: Any) -> dict[str, Any] | None:
    """The quantization options stored in the metadata of ``session`` (``bits``,
    ``block_size``...), or None for a float model."""
    return metadata_json(session, QUANTIZATION_METADATA)


def metadata_static_cache(session: Any) -> dict[str, Any] | None:
    """The static cache entry of ``session``'s metadata (``{"max_length": N}``), or None
    for a model whose cache grows."""
    return metadata_json(session, STATIC_CACHE_METADATA)


def metadata_dtype(session: Any) -> dict[str, Any] | None:
    """The dtype entry of ``session``'s metadata (``{"dtype": ..., "model_dtype": ...}``),
    or None for a file without it."""
    return metadata_json(session, DTYPE_METADATA)


def metadata_attention(session: Any) -> dict[str, Any] | None:
    """The attention entry of ``session``'s metadata (``{"op": ..., "padding": "right"}``),
    or None for an export with the opset-23 ``Attention``."""
    return metadata_json(session, ATTENTION_METADATA)
