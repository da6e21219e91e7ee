"""What ``export_causal_lm(quantize=...)`` asks for: :class:`QuantizeOptions` (bits,
block size, symmetric or not, ONNX Runtime's ``accuracy_level``, which matrices), checked
when made; :mod:`diag.export.make.quantize` does it.

Example::

    >>> QuantizeOptions.parse("int4")
    QuantizeOptions(bits=4, block_size=32, symmetric=True, accuracy_level=4, lm_head=True, lm_head_bits=None, embedding=False, method='nbits')
    >>> QuantizeOptions.parse("int8").name
    'int8'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

METHODS = ("nbits", "dynamic")
#: ``accuracy_level`` of ``MatMulNBits``: the type its inputs are computed in
#: (0 unset, 1 float32, 2 float16, 3 bfloat16, 4 int8)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class QuantizeOptions:
    """What :func:`~diag.export.make.quantize.quantize_model` does;
    ``export_causal_lm(quantize=...)`` takes one (or its name, ``"int4"`` / ``"int8"``). Every field is in the export key and in the
    file's metadata (:data:`diag.contract.QUANTIZATION_METADATA`).

    >>> QuantizeOptions(bits=4, block_size=64, lm_head=False).name
    'int4-b64-sym-acc4-no_lm_head'
    """

    #: 4 or 8
    bits: int = 4
    #: weights quantized in blocks of this many input rows (16, 32, 64, 128, 256...)
    block_size: int = 32
    #: no zero point (the range is symmetric around 0)
    symmetric: bool = True
    #: MatMulNBits' ``accuracy_level`` (:data:`ACCURACY_LEVELS`); 4 computes in int8,
    #: the fast one on CPU; None: 0, ONNX Runtime's default
    accuracy_level: int | None = 4
    #: quantizes the output projection (the largest matrix of a small model)
    lm_head: bool = True
    #: the bits of the quantized lm_head (4 or 8); None: :attr:`bits`. 8 keeps the
    #: logits closer for twice the bytes of that matrix
    lm_head_bits: int | None = None
    #: quantizes the embedding table too (``GatherBlockQuantized``): a tied one reads
    #: the quantized lm_head's table (one copy); an untied one gets its own (4 bits)
    embedding: bool = False
    #: ``"nbits"`` (MatMulNBits, 4 or 8 bits) or ``"dynamic"`` (quantize_dynamic, 8 bits)
    method: str = "nbits"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: use one of {METHODS}.")
        if self.bits not in (4, 8):
            raise ValueError(f"bits={self.bits!r}: diag quantizes to 4 or 8 bits.")
        if self.method == "dynamic" and self.bits != 8:
            raise ValueError("method='dynamic' (quantize_dynamic) quantizes to 8 bits: set bits=8.")
        if self.lm_head_bits is not None:
            if self.lm_head_bits not in (4, 8):
                raise ValueError(f"lm_head_bits={self.lm_head_bits!r}: use 4, 8 or None (bits).")
            if self.method != "nbits" or not self.lm_head:
                raise ValueError(
                    "lm_head_bits needs method='nbits' and lm_head=True (the lm_head quantized "
                    "by MatMulNBits); leave it None otherwise."
                )
        if self.embedding and self.method != "nbits":
            raise ValueError("embedding=True needs method='nbits'.")
        if (
            not isinstance(self.block_size, int)
            or self.block_size < 16
            or self.block_size & (self.block_size - 1)
        ):
            raise ValueError(
                f"block_size={self.block_size!r}: MatMulNBits takes a power of 2 >= 16 (32, 64, 128...)."
            )
        if self.accuracy_level is not None and self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(
                f"accuracy_level={self.accuracy_level!r}: use one of {ACCURACY_LEVELS} or None."
            )

    @classmethod
    def parse(
        cls, quantize: str | QuantizeOptions | None, **overrides: Any
    ) -> QuantizeOptions | None:
        """``"int4"`` / ``"int8"`` / a :class:`QuantizeOptions` / None -> options or None;
        ``overrides`` replace fields (``block_size=64``...).

        :param quantize: the ``quantize`` argument of ``export_causal_lm``

        >>> QuantizeOptions.parse("int8", lm_head=False).lm_head
        False
        >>> QuantizeOptions.parse(None) is None
        True
        """
        if quantize is None:
            if overrides:
                raise ValueError(
                    f"quantization options {sorted(overrides)} given without quantize=."
                )
            return None
        if isinstance(quantize, QuantizeOptions):
            return dataclasses.replace(quantize, **overrides) if overrides else quantize
        names = {"int4": 4, "int8": 8}
        if quantize not in names:
            raise ValueError(
                f"quantize={quantize!r}: use 'int4', 'int8', a QuantizeOptions or None (float)."
            )
        return cls(bits=names[quantize], **overrides)

    @property
    def name(self) -> str:
        """A short readable name; ``"int4"`` / ``"int8"`` for the defaults."""
        default = QuantizeOptions(bits=self.bits)
        parts = [f"int{self.bits}"]
        if self != default:
            if self.method != "nbits":
                parts.append(self.method)  # per channel: no block, no accuracy level
            else:
                parts += [f"b{self.block_size}", "sym" if self.symmetric else "asym"]
                parts.append(f"acc{self.accuracy_level or 0}")
            if not self.lm_head:
                parts.append("no_lm_head")
            elif self.lm_head_bits not in (None, self.bits):
                parts.append(f"lm_head{self.lm_head_bits}")
            if self.embedding:
                parts.append("embedding")
        return "-".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Compact JSON, as stored in the file's metadata."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))


__all__ = ["ACCURACY_LEVELS", "METHODS", "QuantizeOptions"]
