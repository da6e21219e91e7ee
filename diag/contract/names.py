"""The ONNX names of diag's contract: inputs, outputs, cache tensors, dynamic dimensions.

Each cache name pattern is written once, as a :class:`CacheNames` template, which
both builds the names (:meth:`CacheNames.name`) and reads them back
(:meth:`CacheNames.parse`).

Example::

    >>> past_key_name(0), present_value_name(3)
    ('past_key_values.0.key', 'present.3.value')
    >>> PAST.parse("past_key_values.12.value"), PAST.parse("present.0.key")
    ((12, 'value'), None)
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cached_property

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"
#: the write position of a static cache (:data:`diag.contract.layout.STATIC_LAYOUT`)
CACHE_POSITION = "cache_position"
#: int64 ``[keep_length]``: the positions of the step whose logits the graph computes
#: (:mod:`diag.contract.logits_to_keep`); absent from the graphs of other tools
LOGITS_TO_KEEP = "logits_to_keep"

# names of the dynamic dimensions, as they appear in the ONNX graph (they are the names
# of the torch.export dimensions, diag.models.make_dummy_inputs)
#: the batch dimension
DIM_BATCH = "batch"
#: the dimension of the step's new positions
DIM_SEQ = "seq_length"
#: the dimension of the cached positions
DIM_PAST = "past_length"
#: the length of ``logits_to_keep``, the logits' second dimension
DIM_KEEP = "keep_length"


@dataclass(frozen=True)
class CacheNames:
    """How the tensors of one side of the cache (inputs or outputs) are named.

    ``template`` holds the fields ``{layer}`` (the layer's index) and ``{kind}`` (one
    of ``kinds``, the key's word first).

    Example::

        >>> names = CacheNames("present.{layer}.{kind}")
        >>> names.names(2)
        ['present.0.key', 'present.0.value', 'present.1.key', 'present.1.value']
        >>> names.parse("present.1.value"), names.parse("present.01.value")
        ((1, 'value'), None)
        >>> names.pattern("key"), names.patterns()
        ('present.{i}.key', 'present.{i}.key/value')
    """

    template: str
    kinds: tuple[str, str] = ("key", "value")

    def name(self, layer: int, kind: str) -> str:
        """The name of layer ``layer``'s ``kind`` tensor."""
        return self.template.format(layer=layer, kind=kind)

    def names(self, num_layers: int) -> list[str]:
        """Every name in graph order: key 0, value 0, key 1, ..."""
        return [self.name(i, kind) for i in range(num_layers) for kind in self.kinds]

    def pattern(self, kind: str) -> str:
        """The name with ``{i}`` for the layer, as the error messages print it."""
        return self.template.format(layer="{i}", kind=kind)

    def patterns(self) -> str:
        """Both names with ``{i}`` for the layer, shortened when the kind ends them."""
        key, value = self.kinds
        if self.template.endswith("{kind}"):
            return f"{self.pattern(key)}/{value}"
        return f"{self.pattern(key)} / {self.pattern(value)}"

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        # the template read field by field: literal text escaped, each field a group
        parts = []
        for literal, field, _, _ in string.Formatter().parse(self.template):
            parts.append(re.escape(literal))
            if field == "layer":
                parts.append(r"(?P<layer>\d+)")
            elif field == "kind":
                parts.append("(?P<kind>" + "|".join(map(re.escape, self.kinds)) + ")")
            elif field is not None:
                raise ValueError(f"unknown field {{{field}}} in {self.template!r}")
        return re.compile("".join(parts))

    def parse(self, name: str) -> tuple[int, str] | None:
        """``(layer, kind)`` if :meth:`name` builds ``name``, else None."""
        m = self._regex.fullmatch(name)
        if m is None:
            return None
        layer, kind = int(m["layer"]), m["kind"]
        # only what name() writes: "past_key_values.01.key" is not layer 1's
        return (layer, kind) if self.name(layer, kind) == name else None


@dataclass(frozen=True)
class PositionalCacheNames:
    """The cache tensors of a graph whose names say nothing (``cache_0``, ``cat_3``,
    ``past_key_values_key_0``...), read by position: the order a transformers cache
    flattens to, each layer's key then its value (:mod:`diag.export.make.cache_pytree`).
    The same methods as :class:`CacheNames`.

    Example::

        >>> names = PositionalCacheNames(("cat_3", "cat_4", "cat_7", "cat_8"))
        >>> names.name(1, "key"), names.parse("cat_4"), names.names(1)
        ('cat_7', (0, 'value'), ['cat_3', 'cat_4'])
        >>> names.patterns()
        'cat_3, cat_4, ... cat_8 (by position: key then value of each layer)'
    """

    listed: tuple[str, ...]
    kinds: tuple[str, str] = ("key", "value")

    def name(self, layer: int, kind: str) -> str:
        """The name of layer ``layer``'s ``kind`` tensor."""
        return self.listed[2 * layer + self.kinds.index(kind)]

    def names(self, num_layers: int) -> list[str]:
        """Every name in graph order: key 0, value 0, key 1, ..."""
        return list(self.listed[: 2 * num_layers])

    def pattern(self, kind: str) -> str:
        """What a tensor of ``kind`` is, as the error messages print it."""
        return f"the {kind} of layer {{i}} (position {'2i' if kind == self.kinds[0] else '2i+1'})"

    def patterns(self) -> str:
        """The names, shortened, and how they are read."""
        last = f", ... {self.listed[-1]}" if len(self.listed) > 2 else ""
        shown = ", ".join(self.listed[:2]) + last
        return f"{shown} (by position: key then value of each layer)"

    def parse(self, name: str) -> tuple[int, str] | None:
        """``(layer, kind)`` of ``name``, None when it is not one of the listed names."""
        if name not in self.listed:
            return None
        index = self.listed.index(name)
        return index // 2, self.kinds[index % 2]


#: what a :class:`~diag.contract.layout.Layout` names its cache with
AnyCacheNames = CacheNames | PositionalCacheNames

#: the cache inputs, the past of a step
PAST = CacheNames("past_key_values.{layer}.{kind}")
#: the cache outputs, the past with the step's positions appended
PRESENT = CacheNames("present.{layer}.{kind}")


def past_key_name(layer: int) -> str:
    """Name of the input holding layer ``layer``'s past keys."""
    return PAST.name(layer, "key")


def past_value_name(layer: int) -> str:
    """Name of the input holding layer ``layer``'s past values."""
    return PAST.name(layer, "value")


def present_key_name(layer: int) -> str:
    """Name of the output holding layer ``layer``'s keys after the step."""
    return PRESENT.name(layer, "key")


def present_value_name(layer: int) -> str:
    """Name of the output holding layer ``layer``'s values after the step."""
    return PRESENT.name(layer, "value")
