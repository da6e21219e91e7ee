"""How the make stage traces and writes a decoder, as :func:`diag.export_causal_lm` was
asked: :class:`TraceOptions`, part of the plan (:mod:`diag.export.plan.export_plan`).

Example::

    >>> TraceOptions(opset=23, attention="gqa").fuse
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TraceOptions:
    """How the float export traces and writes a decoder, as
    :func:`diag.export_causal_lm` was asked: one value that
    :func:`~diag.export.make.decoder_export.export_decoder`,
    :func:`~diag.export.make.static_export.export_static_decoder` and
    :func:`~diag.export.make.decoder_export.trace_and_save` pass down, instead of the
    same six keywords in each.

    >>> TraceOptions(opset=23, attention="gqa").fuse
    True
    """

    opset: int | None = None
    exporter: str = "onnx-dynamo"
    fuse: bool = True
    #: the generation config JSON written into the metadata (None: none)
    generation_config: str | None = None
    verbose: int = 0
    #: ``"onnx"`` or ``"gqa"``: see :mod:`diag.export.make.attention_kind`
    attention: str = "onnx"
    #: ``layout="plain"`` (:mod:`diag.export.plan.plain_layout`): neither ``position_ids``
    #: nor ``logits_to_keep`` among the inputs
    plain: bool = False
    #: entries added to the file's metadata (the export's dtype, :mod:`diag.export.plan.dtype`)
    metadata: dict[str, str] | None = None


__all__ = ["TraceOptions"]
