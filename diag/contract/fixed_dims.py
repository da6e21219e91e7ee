"""The dimensions a decoding loop needs free, found fixed in a graph.

A decoder is run once on the prompt, then once per new token, on a cache that grows
by the step's positions. A graph exported without dynamic shapes (``torch.export`` of
a sample, transformers' exporter with its default ``OnnxConfig()``) has the sample's
lengths written in: a cache input of exactly 7 positions takes the prompt of 7 tokens
and then no step more. ONNX Runtime would refuse the second step with its own words
(``Got invalid dimensions for input``); :func:`fixed_length_problems` says it before
anything runs, naming the input, the dimension and how to export it so that it grows.

What must be free depends on the layout:

* the cache length (dim 2 of each past input) and the mask's length (past + step),
  unless the layout writes a static cache in place (:data:`~diag.contract.STATIC_LAYOUT`:
  buffers of ``max_length`` positions by design);
* the step's length (dim 1 of ``input_ids``) of a graph that runs the prompt too (one
  graph); a decode graph after a prefill graph may fix it at one token.

The batch may be fixed: :class:`~diag.ort.backend.OrtBackend` then takes that batch only.

Example::

    >>> from diag.contract import DIAG_LAYOUT
    >>> shapes = {"input_ids": ["batch", "seq"], "past_key_values.0.key": [1, 4, 7, 16]}
    >>> for template, name in fixed_length_problems(shapes, DIAG_LAYOUT, ["past_key_values.0.key"]):
    ...     print(template.replace("{what}", repr(name)))  # doctest: +ELLIPSIS
    input 'past_key_values.0.key' has its cache length (dim 2 of [1, 4, 7, 16]) fixed at 7: ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diag.contract.layout import Layout

#: how to export a graph whose lengths grow, by the layout (the tool that wrote it)
_HOW_TO_EXPORT = {
    "transformers": (
        "export it with dynamic shapes: transformers' exporter with "
        "OnnxConfig(dynamic=True) (or dynamic_shapes= naming these dimensions)"
    ),
}
_HOW_TO_EXPORT_ANY = (
    "export it with dynamic shapes (torch.export.Dim for these dimensions in "
    "dynamic_shapes=), or with diag.export_causal_lm, which does"
)


def fixed_size(dim: Any) -> int | None:
    """A dimension's size when the graph fixes it (some exporters write it as a string
    of digits), else None.

    >>> fixed_size(7), fixed_size("7"), fixed_size("past_length"), fixed_size(None)
    (7, 7, None, None)
    """
    if isinstance(dim, int):
        return dim
    if isinstance(dim, str) and dim.isdigit():
        return int(dim)
    return None


def _shape_text(shape: Sequence[Any]) -> str:
    """``[batch, 4, 7, 16]``: sizes as numbers, symbols as their names."""
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def how_to_export(layout: Layout) -> str:
    """What to do about a fixed length, in the terms of the tool that wrote ``layout``."""
    return _HOW_TO_EXPORT.get(layout.name, _HOW_TO_EXPORT_ANY)


def fixed_length_problems(
    shapes: Mapping[str, Sequence[Any]], layout: Layout, past_names: Sequence[str]
) -> list[tuple[str, str]]:
    """``(template, name)`` for each input of the graph read as ``layout`` (``shapes``:
    input name -> shape, as a session gives them) whose length the decoding loop needs
    free but the graph fixes; ``{what}`` in a template stands for the inputs' names."""
    fix = how_to_export(layout)
    found: list[tuple[str, str]] = []
    ids = shapes.get(layout.input_ids) or []
    seq = fixed_size(ids[1]) if len(ids) == 2 else None
    if seq is not None and not (layout.is_pair and seq == 1):
        found.append(
            (
                f"input {{what}} has its step length (dim 1 of {_shape_text(ids)}) fixed at {seq}: "
                "the same graph takes the whole prompt, then one token per step; " + fix,
                layout.input_ids,
            )
        )
    if layout.is_static:
        return found  # the cache and the mask are buffers of max_length positions
    mask = shapes.get(layout.attention_mask or "") or []
    total = fixed_size(mask[1]) if len(mask) == 2 else None
    if total is not None:
        found.append(
            (
                f"input {{what}} has its length (dim 1 of {_shape_text(mask)}) fixed at {total}: "
                "it covers the cached positions and the step's, one more at each step; " + fix,
                layout.attention_mask or "",
            )
        )
    for name in past_names:
        shape = shapes.get(name) or []
        length = fixed_size(shape[2]) if len(shape) == 4 else None
        if length is not None:
            found.append(
                (
                    f"input {{what}} has its cache length (dim 2 of {_shape_text(shape)}) "
                    f"fixed at {length}: a step takes exactly {length} cached positions, "
                    "but the cache starts empty or at the prompt and grows at each step; " + fix,
                    name,
                )
            )
    return found


__all__ = ["fixed_length_problems", "fixed_size", "how_to_export"]
