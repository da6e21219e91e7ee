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
* ``logits_to_keep``: int64 ``[keep]``, the positions of the step (``0 .. seq - 1``)
  whose logits the graph computes, present when the model's forward takes
  transformers' ``logits_to_keep``: ``[seq - 1]`` for generation, ``arange(seq)`` for
  every position (:mod:`diag.contract.logits_to_keep`)

Outputs

* ``logits``: float ``[batch, keep, vocab]`` (``[batch, seq, vocab]`` without
  ``logits_to_keep``)
* ``present.{i}.key`` / ``present.{i}.value``: float
  ``[batch, kv_heads, past + seq, head_dim]``, fed back as the next step's past

``batch``, ``seq``, ``past`` and ``keep`` are dynamic dimensions, named
:data:`~diag.contract.names.DIM_BATCH`, :data:`~diag.contract.names.DIM_SEQ`,
:data:`~diag.contract.names.DIM_PAST` and :data:`~diag.contract.names.DIM_KEEP` in
the graph; the mask's second dimension and
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
    ['input_ids', 'attention_mask', 'past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value', 'logits_to_keep']
    >>> DIAG_LAYOUT.output_names(1)
    ['logits', 'present.0.key', 'present.0.value']
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from diag.contract import names as N
from diag.contract.names import AnyCacheNames

#: how a layout takes a batch of prompts of different lengths
PADDING_SIDES = ("left", "right", "none")


@dataclass(frozen=True)
class Layout:
    """How a decoder ONNX model takes its inputs and returns its cache.

    One graph run once per step (``prefill_present`` None), or a pair: a prefill graph
    without cache inputs returning its cache as ``prefill_present``, then a decode
    graph taking ``past`` and returning ``present`` (``files`` names both, prefill
    first). The cache grows by the step's positions, one key and one value per layer.

    * ``name``: whose layout it is (``"diag"``, ``"onnxruntime-genai"``,
      ``"transformers"``...);
    * ``attention_mask`` / ``position_ids``: None when the graph has no such input;
    * ``logits_to_keep``: the input saying which positions' logits to compute (see
      :mod:`diag.contract.logits_to_keep`), None when the graph computes every
      position's (other tools' layouts, a diag export of a model whose forward has no
      ``logits_to_keep``);
    * ``kv_heads`` / ``head_dim``: set when the graph leaves them symbolic and a side
      file says them (the empty cache of the prefill needs them);
    * ``padding``: how a batch of prompts of different lengths is given: ``"left"``
      (diag: zeros at the start of the mask, position ids counting real tokens),
      ``"right"`` (the attention op reads the lengths from the mask and the rotary
      positions from 0: the engine moves the padding after the tokens), ``"none"``
      (no mask input: a padded batch is refused);
    * ``files`` / ``side_files``: the graph files and the files completing them, in
      the model's folder; empty for a bare file or session.

    Override a field of a detected layout with ``dataclasses.replace(layout, ...)``
    (or ``layout={"head_dim": 64}`` where a function takes a layout).
    """

    name: str
    input_ids: str
    attention_mask: str | None
    position_ids: str | None
    logits: str
    past: AnyCacheNames
    present: AnyCacheNames
    prefill_present: AnyCacheNames | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    padding: str = "left"
    files: tuple[str, ...] = ()
    side_files: tuple[str, ...] = ()
    #: static cache (:data:`STATIC_LAYOUT`): the write position input; None: the cache grows
    cache_position: str | None = None
    #: static cache: the positions of each buffer (None: read from the graph's shapes)
    max_length: int | None = None
    #: the positions whose logits the graph computes (None: every position)
    logits_to_keep: str | None = None

    def __post_init__(self) -> None:
        if self.padding not in PADDING_SIDES:
            raise ValueError(f"padding must be one of {PADDING_SIDES}, not {self.padding!r}.")

    @property
    def is_static(self) -> bool:
        """True when past and present are one buffer of ``max_length`` positions,
        written in place at ``cache_position`` (:data:`STATIC_LAYOUT`)."""
        return self.cache_position is not None

    @property
    def token_inputs(self) -> tuple[str, ...]:
        """The inputs that are not the cache: ids, mask, positions, write position,
        the logits' positions (those it has)."""
        names = (
            self.input_ids,
            self.attention_mask,
            self.position_ids,
            self.cache_position,
            self.logits_to_keep,
        )
        return tuple(n for n in names if n)

    @property
    def is_pair(self) -> bool:
        """True for a prefill graph and a decode graph, False for one graph."""
        return self.prefill_present is not None

    def input_names(
        self, num_layers: int, with_position_ids: bool = True, with_logits_to_keep: bool = True
    ) -> list[str]:
        """All input names in graph order (of the decode graph for a pair); the logits'
        positions come last (the last argument of transformers' forward)."""
        names = [self.input_ids]
        if self.attention_mask:
            names.append(self.attention_mask)
        if with_position_ids and self.position_ids:
            names.append(self.position_ids)
        if self.cache_position:
            names.append(self.cache_position)
        names += self.past.names(num_layers)
        if with_logits_to_keep and self.logits_to_keep:
            names.append(self.logits_to_keep)
        return names

    def output_names(self, num_layers: int) -> list[str]:
        """All output names in graph order."""
        return [self.logits, *self.present.names(num_layers)]

    def prefill_output_names(self, num_layers: int) -> list[str]:
        """The outputs of the prefill graph of a pair, in graph order (an empty list
        for one graph)."""
        if self.prefill_present is None:
            return []
        return [self.logits, *self.prefill_present.names(num_layers)]

    def describe(self) -> str:
        """One line for the error messages: the inputs and outputs this layout expects.

        >>> DIAG_LAYOUT.describe()
        'inputs input_ids, attention_mask, [position_ids], past_key_values.{i}.key/value, [logits_to_keep]; outputs logits, present.{i}.key/value'
        """
        tokens = [self.input_ids]
        if self.attention_mask:
            tokens.append(self.attention_mask)
        if self.position_ids:
            tokens.append(f"[{self.position_ids}]")
        if self.cache_position:
            tokens.append(self.cache_position)
        keep = f", [{self.logits_to_keep}]" if self.logits_to_keep else ""
        text = (
            f"inputs {', '.join(tokens)}, {self.past.patterns()}{keep}; "
            f"outputs {self.logits}, {self.present.patterns()}"
        )
        if self.prefill_present is not None:
            text += f"; prefill outputs {self.logits}, {self.prefill_present.patterns()}"
        return text

    def summary(self) -> str:
        """Several lines, one per field that matters, as ``diag inspect`` prints them.

        >>> print(DIAG_LAYOUT.summary())
        layout diag: one graph
          ids input_ids, mask attention_mask, positions position_ids, logits logits
          cache inputs past_key_values.{i}.key/value, outputs present.{i}.key/value
          logits of the positions in logits_to_keep
          padding left
        """
        lines = [f"layout {self.name}: " + ("prefill + decode graphs" if self.is_pair else "one graph")]
        lines.append(
            f"  ids {self.input_ids}, mask {self.attention_mask or '(none)'}, "
            f"positions {self.position_ids or '(none)'}, logits {self.logits}"
        )
        cache = f"  cache inputs {self.past.patterns()}, outputs {self.present.patterns()}"
        if self.prefill_present is not None:
            cache += f", prefill outputs {self.prefill_present.patterns()}"
        lines.append(cache)
        if self.logits_to_keep:
            lines.append(f"  logits of the positions in {self.logits_to_keep}")
        else:
            lines.append("  logits of every position (no input choosing them)")
        if self.kv_heads is not None or self.head_dim is not None:
            lines.append(f"  kv_heads {self.kv_heads}, head_dim {self.head_dim} (from the side files)")
        lines.append(f"  padding {self.padding}")
        if self.is_static:
            lines.append(
                f"  static cache: {self.max_length or '?'} positions, written at {self.cache_position}"
            )
        if self.files:
            lines.append(f"  files {', '.join(self.files)}")
        if self.side_files:
            lines.append(f"  side files {', '.join(self.side_files)}")
        return "\n".join(lines)


#: diag's contract: what :func:`diag.export_causal_lm` writes
DIAG_LAYOUT = Layout(
    name="diag",
    input_ids=N.INPUT_IDS,
    attention_mask=N.ATTENTION_MASK,
    position_ids=N.POSITION_IDS,
    logits=N.LOGITS,
    past=N.PAST,
    present=N.PRESENT,
    logits_to_keep=N.LOGITS_TO_KEEP,
)


#: diag's static cache layout (``export_causal_lm(..., cache="static", max_length=N)``):
#: the names of :data:`DIAG_LAYOUT` plus ``cache_position`` (int64 ``[seq]``, where the
#: step's positions go: ``past, ..., past + seq - 1``); ``attention_mask`` is
#: ``[batch, max_length]`` (0 on the left padding and on the positions not written
#: yet), each ``past_key_values.{i}.*`` is a ``[batch, kv_heads, max_length, head_dim]``
#: buffer and ``present.{i}.*`` the same buffer with the step's positions written:
#: bind it as the input's own OrtValue and ONNX Runtime writes in place
#: (:class:`diag.ort.cache.InPlaceCache`). The metadata entry
#: :data:`~diag.contract.metadata.STATIC_CACHE_METADATA` records ``max_length``.
STATIC_LAYOUT = replace(DIAG_LAYOUT, name="diag-static", cache_position=N.CACHE_POSITION)


#: diag's layout of an ``export_causal_lm(..., attention="gqa")`` export: the names of
#: :data:`DIAG_LAYOUT`, right padding (``GroupQueryAttention`` reads each row's length
#: from ``attention_mask``: the real tokens first, the padding after them, rotary
#: positions from 0; ``position_ids`` is taken and unused). The metadata entry
#: :data:`~diag.contract.metadata.ATTENTION_METADATA` says so.
GQA_LAYOUT = replace(DIAG_LAYOUT, padding="right")


#: diag's plain layout (``export_causal_lm(..., layout="plain")``): the names of
#: :data:`DIAG_LAYOUT` without ``position_ids`` and ``logits_to_keep``, the logits of
#: every position returned: the inputs a loop written for any exporter feeds
#: (``input_ids``, ``attention_mask``, then the cache inputs in graph order) and the
#: outputs it reads by position (the logits, then each layer's key and value). The
#: model counts the positions from the cache: a left-padded batch needs
#: :data:`DIAG_LAYOUT`'s ``position_ids``.
PLAIN_LAYOUT = replace(DIAG_LAYOUT, position_ids=None, logits_to_keep=None)
