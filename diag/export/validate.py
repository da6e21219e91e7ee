"""Checks an exported causal LM against torch, like ``--verify_export``.

:func:`validate_causal_lm` runs ONNX Runtime and the torch model on several input
sets that differ from the export's dummy inputs:

* ``dummy``: the inputs the model was exported with;
* ``prefill``: an empty cache (``past = 0``), another batch and sequence length;
* ``decode``: batch 1, one new token, a longer past;
* ``left_padding``: batch 2 with a left-padded row (zeros in ``attention_mask``,
  ``position_ids`` counting real tokens only), non-empty past;
* ``prefill_left_padding``: the same with an empty cache (a padded prompt).

For each it reports the largest absolute difference per output group (``logits``,
``present.key``, ``present.value``) and raises :class:`ExportValidationError` when
one exceeds the tolerance.

A sliding-window layer keeps its last ``sliding_window - 1`` positions in torch and
the whole past in the exported model: ONNX Runtime is fed the whole past and torch
the cache cut to the window, so an input set longer than the window (``decode``: 10
positions) checks that the exported mask hides what torch dropped. Feeding the cut
cache instead would give the layers pasts of different lengths (gemma2: the full
layer keeps everything), which the exported graph rejects.

The tolerance is ``atol`` (float32: 1e-4 absolute), unless float32 itself cannot be
that precise: for a deep model, two correct float32 implementations (torch and ONNX
Runtime use other kernels, other summation orders) differ by more than 1e-4 on logits
of magnitude 30 (SmolLM2: torch float32 is ~3e-3 away from float64 on a prefill).
When a group exceeds ``atol``, the validation runs a float64 copy of the model on the
same inputs and measures the *float32 noise* ``|torch float32 - torch float64|``; the
group passes when its difference stays within ``max(atol, 8 * noise)``
(:data:`NOISE_FACTOR`: the difference adds up the rounding errors of both runtimes,
and ONNX Runtime's fused kernels round more than torch's: its ``Attention`` kernel
computes the softmax with its own exponential, and SmolLM2's prefill ``present.value``
lands at 5.2 times torch's noise, 7.6e-4), and the table shows that bound. An
export error (a wrong mask, a baked shape) gives differences of the size of the
values themselves, orders of magnitude above it. ``noise_floor=False`` keeps the
strict absolute tolerance.

A quantized export (:func:`diag.export.quantize.quantize_model`, its options in the
file's metadata) cannot match float32 torch to rounding: its weights moved by up to
half a quantization step. The validation reads the options from the metadata and
checks each group's relative RMS difference ``||onnx - torch|| / ||torch||`` against
:data:`QUANTIZED_RTOL` (per number of bits) instead, and the table says so. It does on
the input sets with an empty past only (their ``present`` outputs are compared too):
a random past puts a quantized model far off the values it was made for (SmolLM2
int4: a relative difference of 1.2 on the logits of a decode over a random past, 0.2
on a prefill). That tolerance catches
what breaks an export (a wrong mask, a baked shape, a cache in the wrong order give
differences of the size of the values), not the quality of the quantization: that is
the job of :func:`diag.quantization_report` (tokens, KL, perplexity).

Example::

    >>> report = validate_causal_lm(model, "model.onnx")  # doctest: +SKIP
    >>> report.table()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diag import contract
from diag.compat.transformers_api import (
    cache_input,
    cache_input_name,
    forward_parameters,
    output_cache,
    require_cache_argument,
)
from diag.helpers.max_diff import max_diff

if TYPE_CHECKING:
    from diag.models.cache_layout import CacheLayout

# a difference within this many times the float32 noise is rounding, not an export error
NOISE_FACTOR = 8.0

# absolute tolerance on logits and cache, per dtype of the model
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

#: tolerance of a quantized export, per number of bits of its weights: the largest
#: relative RMS difference ``||onnx - torch|| / ||torch||`` of each output group and
#: input set
QUANTIZED_RTOL = {8: 0.3, 4: 1.0}


def default_atol(dtype: torch.dtype) -> float:
    """The absolute tolerance on logits and cache of a model of ``dtype``
    (:data:`TOLERANCES`, 1e-2 for another dtype).

    >>> default_atol(torch.float32), default_atol(torch.float64)
    (0.0001, 0.01)
    """
    return TOLERANCES.get(dtype, 1e-2)


def noise_aware_tolerance(atol: float, noise: float | None) -> float:
    """The tolerance of a difference between two float32 implementations: ``atol``, or
    :data:`NOISE_FACTOR` times the float32 noise ``|torch float32 - torch float64|``
    when that is larger (None: the noise was not measured). :mod:`diag.testing` uses
    the same rule.

    >>> noise_aware_tolerance(1e-4, None), noise_aware_tolerance(1e-4, 1e-3)
    (0.0001, 0.008)
    """
    return atol if noise is None else max(atol, NOISE_FACTOR * noise)


class ExportValidationError(AssertionError):
    """The exported model does not compute what the torch model computes."""


@dataclass(frozen=True)
class InputSet:
    """Shape of one validation input set."""

    name: str
    batch: int
    seq: int
    past: int
    left_padding: int = 0  # zeros at the start of the first row's attention_mask


DEFAULT_INPUT_SETS: tuple[InputSet, ...] = (
    InputSet("prefill", batch=3, seq=7, past=0),
    InputSet("decode", batch=1, seq=1, past=9),
    InputSet("left_padding", batch=2, seq=4, past=6, left_padding=3),
    InputSet("prefill_left_padding", batch=2, seq=6, past=0, left_padding=2),
)


@dataclass
class ValidationReport:
    """Largest absolute differences between ONNX Runtime and torch, per input set and
    output group. Each row holds ``max_abs`` and the ``tolerance`` it is checked
    against (``atol``, or :data:`NOISE_FACTOR` times the float32 noise when measured:
    ``noise``)."""

    atol: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: the quantization options of the file (its metadata) when it is quantized: the
    #: rows are then checked on their relative RMS difference (:data:`QUANTIZED_RTOL`)
    quantization: dict[str, Any] | None = None

    @staticmethod
    def _tolerance(row: dict[str, Any], atol: float) -> float:
        return row.get("tolerance", atol)

    def _passes(self, row: dict[str, Any]) -> bool:
        if "rtol" in row:  # a quantized file: the relative RMS difference
            return row["relative"] <= row["rtol"]
        return row["max_abs"] <= self._tolerance(row, self.atol)

    @property
    def ok(self) -> bool:
        return all(self._passes(r) for r in self.rows)

    @property
    def max_abs(self) -> float:
        return max((r["max_abs"] for r in self.rows), default=0.0)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{input set: {"shapes": ..., "logits": ..., "present.key": ..., "present.value": ...}}``
        plus ``"<group> tolerance"`` where the float32 noise raised it above ``atol``."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            row = out.setdefault(r["inputs"], {"shapes": r["shapes"]})
            row[r["output"]] = r["max_abs"]
            if "relative" in r:
                row[f"{r['output']} relative"] = r["relative"]
            elif self._tolerance(r, self.atol) != self.atol:
                row[f"{r['output']} tolerance"] = self._tolerance(r, self.atol)
        return out

    def table(self) -> str:
        """A small text table, one line per input set; ``(<= x)`` marks a tolerance
        raised to :data:`NOISE_FACTOR` times the float32 noise."""
        groups = ["logits", "present.key", "present.value"]
        width = 22
        lines = [f"{'inputs':<22} {'shapes':<14}" + "".join(f"{g:>{width}}" for g in groups)]
        for name, row in self.as_dict().items():
            cells = []
            for g in groups:
                cell = f"{row.get(g, float('nan')):.3g}"
                if f"{g} relative" in row:
                    cell += f" (rel {row[f'{g} relative']:.2g})"
                elif f"{g} tolerance" in row:
                    cell += f" (<= {row[f'{g} tolerance']:.2g})"
                cells.append(f"{cell:>{width}}")
            lines.append(f"{name:<22} {row['shapes']:<14}" + "".join(cells))
        verdict = "OK" if self.ok else "FAILED"
        if self.quantization is not None:
            bits = self.quantization.get("bits")
            rtol = QUANTIZED_RTOL.get(bits, max(QUANTIZED_RTOL.values()))
            lines.append(
                f"tolerance of an int{bits} quantized export: relative RMS difference (rel) "
                f"<= {rtol:g} per output (quantization error, not float32 rounding): {verdict}"
            )
        else:
            lines.append(f"tolerance {self.atol:g}: {verdict}")
        return "\n".join(lines)


def takes_position_ids(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` accepts ``position_ids``."""
    return "position_ids" in forward_parameters(model)


def make_step_inputs(
    model: torch.nn.Module,
    batch: int,
    seq: int,
    past: int,
    left_padding: int = 0,
    with_position_ids: bool = True,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    with_full_past: bool = False,
    layout: CacheLayout | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Inputs of one step of ``model`` of any shape, ``past`` may be 0, the first row
    may be left-padded: ``input_ids``, ``attention_mask``, ``position_ids`` (positions
    of the real tokens) and the cache (a DynamicCache built like the model builds it, under the
    forward's cache argument: ``cache`` from transformers 5.24 on, ``past_key_values``
    before; of the shapes of its own cache:
    :func:`diag.models.cache_layout.cache_layout`, or ``layout`` when given; ``dtype``
    None: the cache's dtype).

    A sliding-window layer of that cache keeps only its last ``sliding_window - 1``
    positions, whereas the exported model takes (and returns) the whole past:
    ``with_full_past=True`` also returns the ``(key, value)`` pairs of every layer
    uncut, the past to feed ONNX Runtime."""
    # imported here, as below: they import transformers, which `import diag.export` skips
    from diag.helpers.cache_helper import make_dynamic_cache
    from diag.models.cache_layout import cache_layout

    if left_padding >= past + seq:
        raise ValueError(
            f"left_padding={left_padding} leaves no real token in {past + seq} positions"
        )
    if layout is None:
        layout = cache_layout(model)
    gen = torch.Generator().manual_seed(seed)
    pairs = layout.random_pairs(batch, past, generator=gen, dtype=dtype)
    mask = torch.ones((batch, past + seq), dtype=torch.int64)
    mask[0, :left_padding] = 0
    inputs: dict[str, Any] = {
        contract.INPUT_IDS: torch.randint(0, layout.vocab_size, (batch, seq), generator=gen),
        contract.ATTENTION_MASK: mask,
    }
    if with_position_ids:
        # padding tokens get position 0 (what generate does), real ones count from 0
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs[contract.POSITION_IDS] = positions[:, past:].contiguous()
    inputs[require_cache_argument(model, "make_step_inputs")] = make_dynamic_cache(pairs, config=model.config)
    return (inputs, pairs) if with_full_past else inputs


def _feeds(
    inputs: dict[str, Any], input_names: Sequence[str], full_past: Sequence[Any] | None = None
) -> dict[str, np.ndarray]:
    from diag.helpers.cache_helper import cache_to_list

    feeds: dict[str, np.ndarray] = {}
    for name in (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.POSITION_IDS):
        if name in inputs:
            feeds[name] = inputs[name].cpu().numpy()
    # the cache's sliding layers hold the window only; the ONNX model wants the whole past
    pairs = cache_to_list(cache_input(inputs)) if full_past is None else full_past
    for i, (k, v) in enumerate(pairs):
        feeds[contract.past_key_name(i)] = k.detach().cpu().numpy()
        feeds[contract.past_value_name(i)] = v.detach().cpu().numpy()
    missing = set(input_names) - set(feeds)
    if missing:
        raise ValueError(
            f"the ONNX model expects inputs {sorted(missing)} the validation does not build"
        )
    return {k: feeds[k] for k in input_names}


def _aligned(expected: torch.Tensor, got: np.ndarray) -> np.ndarray:
    """A sliding-window layer keeps its last positions in torch, all of them in ONNX:
    compares the positions torch kept."""
    if expected.dim() == 4 and got.ndim == 4 and expected.shape[2] < got.shape[2]:
        return got[:, :, got.shape[2] - expected.shape[2] :, :]
    return got


def _max_abs(expected: Any, got: Any) -> float:
    """Largest absolute difference (:func:`diag.max_diff`), inf on a shape mismatch
    or a NaN on one side only."""
    return float(max_diff(expected, got)["abs"])


def _relative_rms(expected: Any, got: Any, mask: torch.Tensor) -> float:
    """``||got - expected|| / ||expected||`` over a tensor or a list of them (inf on a
    shape mismatch), on the real tokens only: ``mask`` ``[batch, total]`` is the
    attention mask (the values computed at padded positions mean nothing, and a
    quantized model moves them most)."""
    pairs = zip(expected, got, strict=True) if isinstance(expected, list) else [(expected, got)]
    keep = mask.cpu().numpy().astype(bool)
    num = den = 0.0
    for e, g in pairs:
        e = e.detach().cpu().double().numpy()
        g = np.asarray(g, dtype=np.float64)
        if e.shape != g.shape:
            return float("inf")
        if e.ndim == 4:  # present [batch, heads, total, head_dim]
            real = keep[:, None, keep.shape[1] - e.shape[2] :, None]
        else:  # logits [batch, seq, vocab]
            real = keep[:, keep.shape[1] - e.shape[1] :, None]
        num += float((((g - e) ** 2) * real).sum())
        den += float(((e**2) * real).sum())
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def _run_torch(model: torch.nn.Module, inputs: dict[str, Any], dtype: torch.dtype | None = None):
    """``(logits, [present keys], [present values])`` of ``model`` on a copy of ``inputs``
    (the cache cast to ``dtype`` when given)."""
    import copy

    from diag.helpers.cache_helper import cache_to_list, map_cache_tensors

    device = next(model.parameters()).device
    torch_inputs = copy.copy(inputs)
    for k in (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.POSITION_IDS):
        if k in torch_inputs:
            torch_inputs[k] = torch_inputs[k].to(device)
    # under the model's own name, whichever the inputs used
    torch_inputs.pop(cache_input_name(inputs), None)
    torch_inputs[require_cache_argument(model, "validate_causal_lm")] = map_cache_tensors(
        cache_input(inputs), lambda t, _: t.to(device=device, dtype=dtype or t.dtype)
    )
    with torch.no_grad():
        out = model(**torch_inputs, use_cache=True)
    present = cache_to_list(output_cache(out))
    return out.logits, [k for k, _ in present], [v for _, v in present]


def compare_one(
    model: torch.nn.Module,
    session: Any,
    inputs: dict[str, Any],
    name: str,
    atol: float = 1e-4,
    reference: Any = None,
    full_past: Sequence[Any] | None = None,
    quantized_rtol: float | None = None,
) -> list[dict[str, Any]]:
    """Runs torch and ONNX Runtime on ``inputs``; returns one row per output group.

    ``reference`` is a callable returning a float64 copy of the model; it is called
    only when a group exceeds ``atol``, to measure the float32 noise. ``full_past``:
    the uncut past of every layer fed to ONNX Runtime (see :func:`make_step_inputs`),
    None: the cache's tensors. ``quantized_rtol``: the file is quantized, each group
    passes when its relative RMS difference (``relative`` in the row) is within it."""
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    feeds = _feeds(inputs, input_names, full_past)
    logits, keys, values = _run_torch(model, inputs)
    got = dict(zip(output_names, session.run(None, feeds), strict=True))
    ids = inputs[contract.INPUT_IDS]
    shapes = f"b={ids.shape[0]} s={ids.shape[1]} p={inputs[contract.ATTENTION_MASK].shape[1] - ids.shape[1]}"
    torch_side = {"logits": logits, "present.key": keys, "present.value": values}
    onnx_side = {
        "logits": got[contract.LOGITS],
        "present.key": [_aligned(t, got[contract.present_key_name(i)]) for i, t in enumerate(keys)],
        "present.value": [
            _aligned(t, got[contract.present_value_name(i)]) for i, t in enumerate(values)
        ],
    }
    rows = [
        {
            "inputs": name,
            "shapes": shapes,
            "output": g,
            "max_abs": _max_abs(torch_side[g], onnx_side[g]),
        }
        for g in torch_side
    ]
    if quantized_rtol is not None:
        for r in rows:
            r["relative"] = _relative_rms(
                torch_side[r["output"]], onnx_side[r["output"]], inputs[contract.ATTENTION_MASK]
            )
            r["rtol"] = quantized_rtol
        return rows
    if reference is not None and any(r["max_abs"] > atol for r in rows):
        logits64, keys64, values64 = _run_torch(reference(), inputs, dtype=torch.float64)
        exact = {"logits": logits64, "present.key": keys64, "present.value": values64}
        for r in rows:
            noise = _max_abs(exact[r["output"]], torch_side[r["output"]])
            r["noise"] = noise
            r["tolerance"] = noise_aware_tolerance(atol, noise)
    return rows


def validate_causal_lm(
    model: torch.nn.Module,
    filename: str | os.PathLike,
    dummy_inputs: dict[str, Any] | None = None,
    input_sets: Sequence[InputSet] = DEFAULT_INPUT_SETS,
    atol: float | None = None,
    raise_on_error: bool = True,
    verbose: int = 0,
    noise_floor: bool = True,
) -> ValidationReport:
    """Compares the ONNX model ``filename`` with ``model`` on several input sets.

    :param model: the torch causal LM the file was exported from
    :param filename: the exported model (following :mod:`diag.contract`)
    :param dummy_inputs: the export inputs, checked first when given (not modified)
    :param input_sets: the other shapes to check
    :param atol: tolerance on the absolute difference; None picks it from the model's
        dtype (:data:`TOLERANCES`)
    :param raise_on_error: raises :class:`ExportValidationError` above tolerance
    :param verbose: prints the table
    :param noise_floor: when a group exceeds ``atol``, measures the float32 noise with
        a float64 copy of the model and raises the tolerance to :data:`NOISE_FACTOR`
        times that noise
    :return: the :class:`ValidationReport`

    A quantized file (options in its metadata) is checked against
    their relative RMS difference, :data:`QUANTIZED_RTOL`, on the input sets with an
    empty past (see the module docstring).
    """
    import copy

    import onnxruntime as ort

    from diag.models.cache_layout import cache_layout

    dtype = next(model.parameters()).dtype
    if atol is None:
        atol = default_atol(dtype)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(filename), options, providers=["CPUExecutionProvider"])
    with_position_ids = contract.POSITION_IDS in {i.name for i in session.get_inputs()}
    quantization = contract.metadata_quantization(session)
    rtol = None
    if quantization is not None:
        rtol = QUANTIZED_RTOL.get(quantization.get("bits"), max(QUANTIZED_RTOL.values()))
    report = ValidationReport(atol=atol, quantization=quantization)
    copies: list[torch.nn.Module] = []

    def reference() -> torch.nn.Module:
        # built once, on first need: a float64 copy doubles the model's memory
        if not copies:
            copies.append(copy.deepcopy(model).to(torch.float64))
        return copies[0]

    ref = reference if noise_floor else None
    layout = cache_layout(model)
    if rtol is not None:
        # a random past: far off what a quantized model was made for (module docstring)
        input_sets = [spec for spec in input_sets if spec.past == 0]
        dummy_inputs = None
    if dummy_inputs is not None:
        report.rows.extend(
            compare_one(model, session, dummy_inputs, "dummy", atol, ref, quantized_rtol=rtol)
        )
    for k, spec in enumerate(input_sets):
        inputs, full_past = make_step_inputs(
            model,
            spec.batch,
            spec.seq,
            spec.past,
            left_padding=spec.left_padding,
            with_position_ids=with_position_ids,
            dtype=dtype,
            seed=k + 1,
            with_full_past=True,
            layout=layout,
        )
        report.rows.extend(
            compare_one(
                model, session, inputs, spec.name, atol, ref, full_past=full_past,
                quantized_rtol=rtol,
            )  # fmt: skip
        )
    copies.clear()
    if verbose:
        print(report.table())
    if raise_on_error and not report.ok:
        if rtol is not None:
            bound = f"a relative RMS of {rtol:g} (int{quantization.get('bits')} quantized)"
        else:
            bound = f"atol={atol:g}" + (
                f" and {NOISE_FACTOR:g} times the float32 noise" if noise_floor else ""
            )
        raise ExportValidationError(
            f"the ONNX model {os.fspath(filename)!r} differs from torch by more than "
            + bound
            + f":\n{report.table()}\nThe export is not reusable: run with verbose=1 "
            "to see the patches applied, or report the model and these figures."
        )
    return report
