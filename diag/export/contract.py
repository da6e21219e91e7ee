"""The export contract: the names and shapes of an exported causal LM.

:func:`diag.export_causal_lm` writes models that follow it and
:func:`diag.onnx_generate` drives any model that follows it.

Inputs

* ``input_ids``: int64 ``[batch, seq]``
* ``attention_mask``: int64 ``[batch, past + seq]`` (1 = real token, 0 = left padding)
* ``position_ids``: int64 ``[batch, seq]``, present when the model's forward takes it
  (the decoders of transformers do; it is what makes left padding exact)
* ``past_key_values.{i}.key`` / ``past_key_values.{i}.value``: float
  ``[batch, kv_heads, past, head_dim]`` for each layer ``i``; ``past`` may be 0
  (the prefill step)

Outputs

* ``logits``: float ``[batch, seq, vocab]``
* ``present.{i}.key`` / ``present.{i}.value``: float
  ``[batch, kv_heads, past + seq, head_dim]``, fed back as the next step's past

``batch``, ``seq`` and ``past`` are dynamic dimensions, named :data:`DIM_BATCH`,
:data:`DIM_SEQ` and :data:`DIM_PAST` in the graph; the mask's second dimension and the
present's third are the expression ``past_length + seq_length``. None is specialised:
``past = 0``, ``batch = 1`` and ``seq = 1`` run the same graph.

Details an engine driving the model must know

* The cache tensors follow the model's dtype (float32 for a float32 model); the
  inputs ``input_ids``, ``attention_mask`` and ``position_ids`` are int64.
* Left padding: zeros at the start of ``attention_mask``, ``position_ids`` counting the
  real tokens only (``(attention_mask.cumsum(-1) - 1).clip(0)`` of the new positions).
  The outputs of the padded positions are defined too (their attention output is
  zero, as in torch), so a padded batch gives the same logits and present as torch at
  every position.
* Sliding-window layers (mistral, gemma2...) are exported like full layers: their
  ``present`` holds the whole past (``past + seq`` positions) and the sliding mask
  hides what lies outside the window. Torch keeps only the last ``sliding_window - 1``
  positions of such a layer: compare the last positions.
* ``present.{i}`` is ``past_key_values.{i}`` with the new positions appended: feed it
  back unchanged as the next step's past.

Example::

    >>> past_key_name(0), present_value_name(3)
    ('past_key_values.0.key', 'present.3.value')
"""

from __future__ import annotations

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"

# names of the dynamic dimensions, as they appear in the ONNX graph
DIM_BATCH = "batch"
DIM_SEQ = "seq_length"
DIM_PAST = "past_length"


def past_key_name(layer: int) -> str:
    """Name of the input holding layer ``layer``'s past keys."""
    return f"past_key_values.{layer}.key"


def past_value_name(layer: int) -> str:
    """Name of the input holding layer ``layer``'s past values."""
    return f"past_key_values.{layer}.value"


def present_key_name(layer: int) -> str:
    """Name of the output holding layer ``layer``'s keys after the step."""
    return f"present.{layer}.key"


def present_value_name(layer: int) -> str:
    """Name of the output holding layer ``layer``'s values after the step."""
    return f"present.{layer}.value"


def input_names(num_layers: int, with_position_ids: bool = True) -> list[str]:
    """All input names in graph order."""
    names = [INPUT_IDS, ATTENTION_MASK]
    if with_position_ids:
        names.append(POSITION_IDS)
    for i in range(num_layers):
        names.extend([past_key_name(i), past_value_name(i)])
    return names


def output_names(num_layers: int) -> list[str]:
    """All output names in graph order."""
    names = [LOGITS]
    for i in range(num_layers):
        names.extend([present_key_name(i), present_value_name(i)])
    return names
