"""Which inputs an export takes: ``export_causal_lm(..., layout=...)``.

* ``"diag"`` (the default): :data:`diag.contract.DIAG_LAYOUT`, with ``logits_to_keep``
  when the forward takes it, so that a generation step computes the last position's
  logits only (what :func:`diag.onnx_generate` feeds; the fastest);
* ``"plain"``: :data:`diag.contract.PLAIN_LAYOUT`, the same names without
  ``logits_to_keep``, every position's logits returned: the inputs the generate loops
  written for any exporter feed (``input_ids``, ``attention_mask``,
  ``[position_ids]``, the cache inputs in graph order) and the outputs they read by
  position (the logits, then each layer's key and value), onnx-diagnostic's
  ``onnx_generate`` among them. :func:`diag.onnx_generate` drives it too.

Example::

    >>> check_layout("plain", cache="dynamic")
    'plain'
"""

from __future__ import annotations

#: the values of ``export_causal_lm(layout=...)``
LAYOUTS = ("diag", "plain")


def check_layout(layout: str, cache: str = "dynamic") -> str:
    """``layout`` checked against :data:`LAYOUTS` and the ``cache`` it goes with."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}.")
    if layout == "plain" and cache == "static":
        raise ValueError(
            "layout='plain' is the layout of a growing cache, what other tools' loops feed; "
            "a static cache needs its write position and buffers (diag's layout): pass "
            "cache='dynamic' with it, or drop layout='plain'."
        )
    return layout


__all__ = ["LAYOUTS", "check_layout"]
