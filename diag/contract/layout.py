"""The layout of an ONNX decoder: how it takes its inputs and returns its cache.

A :class:`Layout` names the inputs and outputs of one decoding step. diag's own
contract is one layout, :data:`DIAG_LAYOUT`: :func:`diag.export_causal_lm` writes
models that follow it and :func:`diag.onnx_generate` drives any model that follows it.

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

``batch``, ``seq`` and ``past`` are dynamic dimensions, named
:data:`~diag.contract.names.DIM_BATCH`, :data:`~diag.contract.names.DIM_SEQ` and
:data:`~diag.contract.names.DIM_PAST` in the graph; the mask's second dimension and
the present's third are the expression ``past_length + seq_length``. None is
specialised: ``past = 0``, ``batch = 1`` and ``seq = 1`` run the same graph.

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

    >>> DIAG_LAYOUT.input_names(2, with_position_ids=False)
    ['input_ids', 'attention_mask', 'past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value']
    >>> DIAG_LAYOUT.output_names(1)
    ['logits', 'present.0.key', 'present.0.value']
"""

from __future__ import annotations

from dataclasses import dataclass

from diag.contract import names as N
from diag.contract.names import CacheNames


@dataclass(frozen=True)
class Layout:
    """How a decoder ONNX model takes its inputs and returns its cache: one graph run
    once per step, the cache in growing past inputs and present outputs, one key and
    one value per layer.

    ``name`` says whose layout it is (``"diag"``); ``position_ids`` is an optional
    input, the others are required.
    """

    name: str
    input_ids: str
    attention_mask: str
    position_ids: str
    logits: str
    past: CacheNames
    present: CacheNames

    @property
    def token_inputs(self) -> tuple[str, str, str]:
        """The inputs that are not the cache: ids, mask, positions."""
        return (self.input_ids, self.attention_mask, self.position_ids)

    def input_names(self, num_layers: int, with_position_ids: bool = True) -> list[str]:
        """All input names in graph order."""
        names = [self.input_ids, self.attention_mask]
        if with_position_ids:
            names.append(self.position_ids)
        return names + self.past.names(num_layers)

    def output_names(self, num_layers: int) -> list[str]:
        """All output names in graph order."""
        return [self.logits, *self.present.names(num_layers)]

    def describe(self) -> str:
        """One line for the error messages: the inputs and outputs this layout expects.

        >>> DIAG_LAYOUT.describe()
        'inputs input_ids, attention_mask, [position_ids], past_key_values.{i}.key/value; outputs logits, present.{i}.key/value'
        """
        return (
            f"inputs {self.input_ids}, {self.attention_mask}, [{self.position_ids}], "
            f"{self.past.patterns()}; outputs {self.logits}, {self.present.patterns()}"
        )


#: diag's contract: what :func:`diag.export_causal_lm` writes
DIAG_LAYOUT = Layout(
    name="diag",
    input_ids=N.INPUT_IDS,
    attention_mask=N.ATTENTION_MASK,
    position_ids=N.POSITION_IDS,
    logits=N.LOGITS,
    past=N.PAST,
    present=N.PRESENT,
)
