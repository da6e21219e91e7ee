"""The three ways the command line generates, behind one call.

* ``hf``: ``model.generate`` from transformers (the reference);
* ``torch``: :func:`diag.generate`;
* ``onnx``: :func:`diag.onnx_generate` on the model exported (and cached) by
  :func:`diag.export_causal_lm`.

Each runner takes the same token ids and :class:`~diag.generation.options.DecodingOptions`
(:func:`decoding_options` builds them from the command line) and returns the
:class:`~diag.generation.result.GenerateResult` of the call with its wall time. The
options are resolved once against the model's generation config; ``model.generate``
gets only those that were given (:meth:`DecodingOptions.given`) and takes the others
from that same config.

Example::

    runner = make_runner("onnx", model)
    options = decoding_options(model, tokenizer, max_new_tokens=20)
    result, seconds = runner(input_ids, attention_mask, options)
    result.generated()[0], result.finish_reasons
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from diag.cli.loading import eos_token_ids
from diag.generation.options import UNSET, DecodingOptions, resolve_options
from diag.generation.result import GenerateResult

if TYPE_CHECKING:  # the exporter is loaded by the onnx backend only
    from diag.export.plan.export_options import ExportOptions

#: the order the command line shows the backends in; ``hf`` is the reference
BACKEND_LABELS = {
    "hf": "model.generate",
    "torch": "diag.generate",
    "onnx": "diag.onnx_generate",
}


def decoding_options(
    model: Any, tokenizer: Any, max_new_tokens: int, **given: Any
) -> DecodingOptions:
    """The options of a command: ``max_new_tokens`` (the command's), the eos ids the
    model stops on (its generation config's, else the tokenizer's; none given when
    there is none), the tokenizer's pad id and the options the user gave
    (:func:`diag.cli.args.given_decoding_options`), resolved against the model's
    generation config like ``model.generate`` resolves them.

    >>> from diag.models import load_pretrained
    >>> model, tokenizer = load_pretrained("tiny:llama", progress=False)
    >>> options = decoding_options(model, tokenizer, 5, top_k=7)
    >>> sorted(options.given()) == ["eos_token_id", "max_new_tokens", "pad_token_id", "top_k"]
    True
    """
    eos = eos_token_ids(model, tokenizer)
    return resolve_options(
        None,
        getattr(model, "generation_config", None),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos if eos else UNSET,
        pad_token_id=tokenizer.pad_token_id,
        **given,
    )


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


class Runner:
    """A backend of the command line: called with the token ids, the options and a
    seed, it returns the :class:`GenerateResult` and the seconds :meth:`run` took
    (what :meth:`prepare` sets up once, a session, is not timed)."""

    #: the backend's name on the command line (a key of :data:`BACKEND_LABELS`)
    name = ""

    def __init__(self, model: Any):
        self.model = model

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingOptions,
        seed: int = 0,
    ) -> tuple[GenerateResult, float]:
        self.prepare()
        begin = time.perf_counter()
        result = self.run(input_ids, attention_mask, options, seed)
        return result, time.perf_counter() - begin

    def prepare(self) -> None:
        """What the first call sets up and the next ones reuse (nothing by default)."""

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingOptions,
        seed: int,
    ) -> GenerateResult:
        """One generation (timed by :meth:`__call__`)."""
        raise NotImplementedError


class HFRunner(Runner):
    """``model.generate``, its output read as a :class:`GenerateResult`."""

    name = "hf"

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingOptions,
        seed: int,
    ) -> GenerateResult:
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                return_dict_in_generate=True,
                **options.given(),
            )
        prompt = input_ids.shape[1]
        eos = options.eos_token_ids
        rows = [cut_after_eos(row, eos) for row in out.sequences[:, prompt:].tolist()]
        logits = getattr(out, "logits", None)
        return GenerateResult(
            sequences=out.sequences,
            num_prompt_tokens=prompt,
            num_generated_tokens=[len(row) for row in rows],
            finish_reasons=["stop" if row and row[-1] in eos else "length" for row in rows],
            logits=tuple(t.float() for t in logits) if logits else None,
            # one forward per new position: model.generate stops when every row is done
            num_steps=out.sequences.shape[1] - prompt,
        )


class StepsRunner(Runner):
    """diag's loop (:func:`~diag.generation.front.run_generation`) over the
    :class:`~diag.generation.steps.Steps` opened once from :meth:`source`."""

    def __init__(self, model: Any):
        super().__init__(model)
        self.steps: Any = None

    def source(self) -> Any:
        """What :func:`~diag.generation.steps.open_steps` opens: the model."""
        return self.model

    def prepare(self) -> None:
        """The steps (a session for an ONNX model), once."""
        if self.steps is None:
            # imported here: a run loads the backends it uses only
            from diag.generation.steps import open_steps

            self.steps = open_steps(self.source())

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingOptions,
        seed: int,
    ) -> GenerateResult:
        from diag.generation.front import run_generation

        return run_generation(
            self.steps,
            input_ids,
            attention_mask,
            options,
            generator=torch.Generator().manual_seed(seed),
            return_result=True,
        )


class TorchRunner(StepsRunner):
    """:func:`diag.generate`: the loop over the torch model."""

    name = "torch"


class OnnxRunner(StepsRunner):
    """:func:`diag.onnx_generate`: the loop over the exported model (exported on the
    first call, cached by :func:`diag.export_causal_lm`), or over the file
    :attr:`steps` was opened from (``compare --onnx``)."""

    name = "onnx"

    def __init__(self, model: Any, force_export: bool = False, export: ExportOptions | None = None):
        super().__init__(model)
        self.force_export = force_export
        #: the options of the export it runs (None: the defaults)
        self.export = export

    def source(self) -> Any:
        """The export's path (or the cached one's)."""
        from diag.cli.exported_model import export_for_comparison

        exported = export_for_comparison(self.model, force=self.force_export, options=self.export)
        return exported.path


def make_runner(
    name: str,
    model: Any,
    force_export: bool = False,
    export: ExportOptions | None = None,
) -> Runner:
    """The runner of backend ``name`` (``hf``, ``torch`` or ``onnx``; ``export``: the
    options of the export the onnx backend runs, None: the defaults)."""
    if name == "hf":
        return HFRunner(model)
    if name == "torch":
        return TorchRunner(model)
    if name == "onnx":
        return OnnxRunner(model, force_export=force_export, export=export)
    raise ValueError(f"unknown backend {name!r}; choose among {sorted(BACKEND_LABELS)}")
