"""The three ways the command line generates, behind one call.

* ``hf``: ``model.generate`` from transformers (the reference);
* ``torch``: :func:`diag.generate`;
* ``onnx``: :func:`diag.onnx_generate` on the model exported (and cached) by
  :func:`diag.export_causal_lm`.

Each runner takes the same token ids and decoding options and returns a
:class:`Generation`: the new tokens of every row (cut after the eos), the wall time of
the call and, when asked, the raw logits of every step.

Example::

    runner = make_runner("onnx", model)
    gen = runner(input_ids, attention_mask, DecodingArgs(max_new_tokens=20, eos_token_id=[2]))
    gen.new_tokens[0], gen.seconds
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from diag.cli.args import DECODING_OPTIONS
from diag.generation.options import UNSET

#: the order the command line shows the backends in; ``hf`` is the reference
BACKEND_LABELS = {
    "hf": "model.generate",
    "torch": "diag.generate",
    "onnx": "diag.onnx_generate",
}


@dataclass
class DecodingArgs:
    """Decoding options of the command line, the same for every backend.

    ``max_new_tokens`` is the command's, ``eos_token_id`` the ids the command stops on
    and cuts the rows at (the model's, else the tokenizer's), ``pad_token_id`` the
    tokenizer's. The other options (:data:`diag.cli.args.DECODING_OPTIONS`) are those
    the user gave; one left to
    :data:`~diag.generation.options.UNSET` is not passed, so the model's generation
    config decides it, in every backend alike.
    """

    max_new_tokens: int
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = UNSET
    do_sample: bool = UNSET
    temperature: float = UNSET
    top_k: int = UNSET
    top_p: float = UNSET
    repetition_penalty: float = UNSET
    num_return_sequences: int = UNSET
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments in :class:`transformers.GenerationConfig` names: only what
        was given (an empty ``eos_token_id`` is not passed: the model has no eos then)."""
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.eos_token_id:
            kw["eos_token_id"] = list(self.eos_token_id)
        for name in ("pad_token_id", *DECODING_OPTIONS):
            value = getattr(self, name)
            if value is not UNSET:
                kw[name] = value
        return kw


@dataclass
class Generation:
    """What a backend generated for a batch."""

    backend: str
    #: the new tokens of every row (``batch * num_return_sequences`` rows), eos included
    new_tokens: list[list[int]]
    #: wall time of the generation call
    seconds: float
    #: raw logits ``[rows, vocab]`` of every step, when asked
    step_logits: list[torch.Tensor] | None = None

    @property
    def num_new_tokens(self) -> list[int]:
        return [len(t) for t in self.new_tokens]


def cut_after_eos(row: list[int], eos: list[int], length: int | None = None) -> list[int]:
    """The tokens of ``row`` up to its first eos (included), at most ``length``.

    >>> cut_after_eos([5, 6, 2, 2, 2], [2]), cut_after_eos([5, 6, 7], [2], length=2)
    ([5, 6, 2], [5, 6])
    """
    if length is not None:
        row = row[:length]
    for i, token in enumerate(row):
        if token in eos:
            return row[: i + 1]
    return list(row)


def _rows(new_tokens: torch.Tensor, eos: list[int], lengths: list[int] | None) -> list[list[int]]:
    rows = new_tokens.tolist()
    return [
        cut_after_eos(row, eos, None if lengths is None else lengths[i])
        for i, row in enumerate(rows)
    ]


class HFRunner:
    """``model.generate``."""

    name = "hf"

    def __init__(self, model: Any):
        self.model = model

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingArgs,
        output_logits: bool = False,
    ) -> Generation:
        torch.manual_seed(options.seed)
        begin = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                return_dict_in_generate=True,
                output_logits=output_logits,
                **options.kwargs(),
            )
        seconds = time.perf_counter() - begin
        new = out.sequences[:, input_ids.shape[1] :]
        logits = [t.float() for t in out.logits] if output_logits and out.logits else None
        return Generation(self.name, _rows(new, options.eos_token_id, None), seconds, logits)


class TorchRunner:
    """:func:`diag.generate`."""

    name = "torch"

    def __init__(self, model: Any):
        self.model = model

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingArgs,
        output_logits: bool = False,
    ) -> Generation:
        # imported here, as in the other runners: a run loads the backends it uses only
        from diag.generation import generate

        generator = torch.Generator().manual_seed(options.seed)
        begin = time.perf_counter()
        result = generate(
            self.model,
            input_ids,
            attention_mask,
            generator=generator,
            output_logits=output_logits,
            return_result=True,
            **options.kwargs(),
        )
        seconds = time.perf_counter() - begin
        return _from_result(self.name, result, options, seconds, output_logits)


def _from_result(
    name: str, result: Any, options: DecodingArgs, seconds: float, output_logits: bool
) -> Generation:
    rows = _rows(result.new_tokens, options.eos_token_id, list(result.num_generated_tokens))
    logits = None
    if output_logits and result.logits:
        logits = [t.float() for t in result.logits]
    return Generation(name, rows, seconds, logits)


class OnnxRunner:
    """:func:`diag.onnx_generate` on the exported model (exported on the first call,
    cached by :func:`diag.export_causal_lm`); the ONNX Runtime session is created once
    and reused."""

    name = "onnx"

    def __init__(self, model: Any, force_export: bool = False, quantize: str | None = None):
        self.model = model
        self.force_export = force_export
        self.quantize = quantize
        self.exported: Any = None
        self.backend: Any = None

    def export(self) -> Any:
        """Exports the model (or finds it in the cache); returns the
        :class:`diag.cli.exporting.ExportedModel`."""
        if self.exported is None:
            from diag.cli.exporting import export_for_comparison

            self.exported = export_for_comparison(
                self.model, force=self.force_export, quantize=self.quantize
            )
        return self.exported

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingArgs,
        output_logits: bool = False,
    ) -> Generation:
        from diag.ort import get_backend, onnx_generate

        if self.backend is None:
            self.backend = get_backend(self.export().path)
        generator = torch.Generator().manual_seed(options.seed)
        begin = time.perf_counter()
        result = onnx_generate(
            self.backend,
            input_ids,
            attention_mask,
            generator=generator,
            output_logits=output_logits,
            # the defaults model.generate and diag.generate fall back on
            generation_config=self.model.generation_config,
            return_result=True,
            **options.kwargs(),
        )
        seconds = time.perf_counter() - begin
        return _from_result(self.name, result, options, seconds, output_logits)


def make_runner(
    name: str, model: Any, force_export: bool = False, quantize: str | None = None
) -> Any:
    """The runner of backend ``name`` (``hf``, ``torch`` or ``onnx``; ``quantize``:
    the onnx backend runs a quantized export)."""
    if name == "hf":
        return HFRunner(model)
    if name == "torch":
        return TorchRunner(model)
    if name == "onnx":
        return OnnxRunner(model, force_export=force_export, quantize=quantize)
    raise ValueError(f"unknown backend {name!r}; choose among {sorted(BACKEND_LABELS)}")
