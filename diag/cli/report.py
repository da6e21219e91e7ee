"""What the sub-commands print: the latency report, and file-name slugs.

Example (20 output tokens in 500 ms in all)::

    >>> report = LatencyReport(batch_size=2, input_tokens=[5, 7], output_tokens=[10, 10],
    ...                        encode_seconds=0.001, generation_seconds=0.497, decode_seconds=0.002)
    >>> round(report.ms_per_output_token, 1), round(report.output_tokens_per_second, 1)
    (25.0, 40.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class LatencyReport:
    """The latency figures LLM inference scripts print after a batch generation.

    ``input_tokens`` / ``output_tokens`` count the tokens of every row (padding
    excluded, an eos included). The total latency is encode + generation + decode, and
    the per-token figures divide it by the number of output tokens, so that the cost of
    the prompt (prefill) is part of what a generated token costs.
    """

    batch_size: int
    input_tokens: list[int]
    output_tokens: list[int]
    encode_seconds: float
    generation_seconds: float
    decode_seconds: float

    @property
    def total_input_tokens(self) -> int:
        return sum(self.input_tokens)

    @property
    def total_output_tokens(self) -> int:
        return sum(self.output_tokens)

    @property
    def total_seconds(self) -> float:
        return self.encode_seconds + self.generation_seconds + self.decode_seconds

    @property
    def ms_per_output_token(self) -> float:
        n = self.total_output_tokens
        return self.total_seconds * 1000 / n if n else float("nan")

    @property
    def output_tokens_per_second(self) -> float:
        return (
            self.total_output_tokens / self.total_seconds
            if self.total_seconds > 0
            else float("nan")
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as ``{field: value}``, the names :meth:`format` prints."""
        return {
            "batch_size": self.batch_size,
            "input_tokens": list(self.input_tokens),
            "total_input_tokens": self.total_input_tokens,
            "output_tokens": list(self.output_tokens),
            "total_output_tokens": self.total_output_tokens,
            "encode_latency_ms": self.encode_seconds * 1000,
            "generation_latency_ms": self.generation_seconds * 1000,
            "decode_latency_ms": self.decode_seconds * 1000,
            "total_latency_ms": self.total_seconds * 1000,
            "ms_per_output_token": self.ms_per_output_token,
            "output_tokens_per_s": self.output_tokens_per_second,
        }

    def format(self) -> str:
        """One ``name  value`` line per figure.

        >>> print(LatencyReport(1, [3], [4], 0.001, 0.1, 0.001).format().splitlines()[0])
        batch_size             1
        """
        rows = [
            ("batch_size", f"{self.batch_size}"),
            ("input_tokens", f"{self.input_tokens} (total {self.total_input_tokens})"),
            ("output_tokens", f"{self.output_tokens} (total {self.total_output_tokens})"),
            ("encode_latency", f"{self.encode_seconds * 1000:.2f} ms"),
            ("generation_latency", f"{self.generation_seconds * 1000:.2f} ms"),
            ("decode_latency", f"{self.decode_seconds * 1000:.2f} ms"),
            ("total_latency", f"{self.total_seconds * 1000:.2f} ms"),
            ("ms_per_output_token", f"{self.ms_per_output_token:.2f} ms/token"),
            ("output_tokens_per_s", f"{self.output_tokens_per_second:.2f} tokens/s"),
        ]
        width = max(len(name) for name, _ in rows) + 4
        return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def slug(name: str) -> str:
    """A file-name friendly version of a model name.

    >>> slug("tiny:llama"), slug("./models/my-model/"), slug("HuggingFaceTB/SmolLM2-135M")
    ('tiny-llama', 'my-model', 'HuggingFaceTB-SmolLM2-135M')
    """
    text = name.rstrip("/\\")
    if os.path.isdir(text) or text.startswith((".", "/", "~")):
        text = os.path.basename(text)
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return out or "model"
