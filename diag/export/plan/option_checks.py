"""The checks of :func:`diag.export_causal_lm`'s options that the plan runs before
anything is traced: the exporter, the opset, the attention op, the cache and its
``max_length``, each refused with what to pass instead (``layout=``:
:mod:`~diag.export.plan.plain_layout`; ``quantize=``:
:mod:`~diag.export.plan.quantize_options`).

Example::

    >>> check_attention("gqa"), check_max_length("static", 2048)
    ('gqa', 2048)
    >>> check_attention("sdpa")
    Traceback (most recent call last):
    ...
    ValueError: attention must be one of ('onnx', 'gqa'), not 'sdpa'.
"""

from __future__ import annotations

#: the exporters of ``exporter=``
EXPORTERS = ("onnx-dynamo",)

#: the values of ``attention=``, the default first (:mod:`diag.export.make.attention_kind`)
ATTENTIONS = ("onnx", "gqa")

#: the first opset with ``TensorScatter`` (and ``Attention``'s ``nonpad_kv_seqlen``):
#: the opset of a static cache (:mod:`diag.export.make.static_cache`)
STATIC_OPSET = 24

#: the smallest ``max_length`` :func:`~diag.export.make.static_export.static_dummy_inputs`
#: can trace with (its dummy step writes 3 positions after 5)
MIN_MAX_LENGTH = 16


def check_exporter(exporter: str) -> None:
    """Raises a ValueError for an exporter not in :data:`EXPORTERS`."""
    if exporter not in EXPORTERS:
        raise ValueError(
            f"exporter={exporter!r} is not supported; use one of {EXPORTERS} "
            "(torch.onnx.export with dynamo=True, the exporter of torch >= 2.5)."
        )


def check_opset(opset: int | None) -> None:
    """Raises a TypeError for an opset that is not an int (or None: the default).

    >>> check_opset(23)
    """
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)):
        raise TypeError(f"opset={opset!r}: give an int (23, 24) or None for the default.")


def check_attention(attention: str) -> str:
    """``attention``, checked against :data:`ATTENTIONS`."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}.")
    return attention


def check_max_length(cache: str, max_length: int | None) -> int | None:
    """``max_length`` checked against ``cache`` (``"dynamic"`` or ``"static"``).

    >>> check_max_length("static", 2048), check_max_length("dynamic", None)
    (2048, None)
    """
    if cache not in ("dynamic", "static"):
        raise ValueError(f"cache={cache!r}: use 'dynamic' (the default) or 'static'.")
    if cache == "dynamic":
        if max_length is not None:
            raise ValueError(
                "max_length= sizes the buffers of a static cache: pass cache='static' with "
                "it, or drop it (a dynamic cache grows as it needs)."
            )
        return None
    if (
        not isinstance(max_length, int)
        or isinstance(max_length, bool)
        or max_length < MIN_MAX_LENGTH
    ):
        raise ValueError(
            f"cache='static' needs max_length=N, the positions of each buffer (prompt plus "
            f"new tokens, at least {MIN_MAX_LENGTH}), e.g. max_length=2048; got {max_length!r}."
        )
    return max_length


__all__ = [
    "ATTENTIONS",
    "EXPORTERS",
    "MIN_MAX_LENGTH",
    "STATIC_OPSET",
    "check_attention",
    "check_exporter",
    "check_max_length",
    "check_opset",
]
