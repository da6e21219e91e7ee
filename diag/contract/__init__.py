"""diag's contract: how an exported decoder takes its inputs and returns its cache.

The exporter (:mod:`diag.export`) writes models that follow it and the ONNX Runtime
engine (:mod:`diag.ort`) and the diagnosis (:mod:`diag.diagnose`) read models against
it; the three import it from here and none imports another for it.

* :mod:`diag.contract.names`: the ONNX names (inputs, outputs, cache patterns) and the
  dynamic dimensions;
* :mod:`diag.contract.layout`: :class:`Layout`, the description of a decoder's inputs
  and outputs, and :data:`DIAG_LAYOUT`, diag's own, with the contract in full;
* :mod:`diag.contract.read`: :func:`read_contract`, a session checked against a
  layout, :class:`ContractInfo` what it found, :class:`ContractError` why not;
* :mod:`diag.contract.metadata`: the metadata entries (the generation config).
* :mod:`diag.contract.logits_to_keep`: which positions' logits a step computes, and
  what to feed for the last one (generation) or for every one (the diagnosis);
* :mod:`diag.contract.detect`: the layout of a file or folder another tool wrote
  (onnxruntime-genai's builder, transformers' exporter, optimum-onnx), found from its
  graph and side files;
* :mod:`diag.contract.inspection`: :func:`~diag.contract.inspection.inspect_onnx`,
  what a model is and why diag cannot drive it when it cannot;
* :mod:`diag.contract.files`: a model's files read, with an error naming the file
  and the fix when one is missing, empty, truncated or of another format;
* :mod:`diag.contract.description`: everything the above read of one model, in one
  value (what :mod:`diag.ort` opens), the graphs read as sessions show them
  (:mod:`diag.contract.graph_view`).

Example::

    >>> from diag.contract import DIAG_LAYOUT, past_key_name
    >>> DIAG_LAYOUT.input_names(1)
    ['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key', 'past_key_values.0.value', 'logits_to_keep']
    >>> past_key_name(3)
    'past_key_values.3.key'
"""

from diag.contract.layout import DIAG_LAYOUT, GQA_LAYOUT, PLAIN_LAYOUT, STATIC_LAYOUT, Layout
from diag.contract.logits_to_keep import every_position, keep_every_position, last_position
from diag.contract.metadata import (
    ATTENTION_METADATA,
    DTYPE_METADATA,
    GENERATION_CONFIG_METADATA,
    QUANTIZATION_METADATA,
    STATIC_CACHE_METADATA,
    metadata_attention,
    metadata_dtype,
    metadata_generation_config,
    metadata_quantization,
    metadata_static_cache,
)
from diag.contract.names import (
    ATTENTION_MASK,
    CACHE_POSITION,
    DIM_BATCH,
    DIM_KEEP,
    DIM_PAST,
    DIM_SEQ,
    INPUT_IDS,
    LOGITS,
    LOGITS_TO_KEEP,
    PAST,
    POSITION_IDS,
    PRESENT,
    CacheNames,
    PositionalCacheNames,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)
from diag.contract.read import ContractError, ContractInfo, read_contract

__all__ = [
    "ATTENTION_MASK",
    "ATTENTION_METADATA",
    "DTYPE_METADATA",
    "CACHE_POSITION",
    "CacheNames",
    "ContractError",
    "ContractInfo",
    "DIAG_LAYOUT",
    "DIM_BATCH",
    "DIM_KEEP",
    "DIM_PAST",
    "DIM_SEQ",
    "GENERATION_CONFIG_METADATA",
    "GQA_LAYOUT",
    "INPUT_IDS",
    "LOGITS",
    "LOGITS_TO_KEEP",
    "Layout",
    "PAST",
    "PLAIN_LAYOUT",
    "POSITION_IDS",
    "PositionalCacheNames",
    "PRESENT",
    "QUANTIZATION_METADATA",
    "STATIC_CACHE_METADATA",
    "STATIC_LAYOUT",
    "every_position",
    "keep_every_position",
    "last_position",
    "metadata_attention",
    "metadata_dtype",
    "metadata_generation_config",
    "metadata_quantization",
    "metadata_static_cache",
    "past_key_name",
    "past_value_name",
    "present_key_name",
    "present_value_name",
    "read_contract",
]
