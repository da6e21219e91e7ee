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

The tolerance, for float and quantized exports, is :mod:`diag.export.check.tolerance`'s.

A torch output holding NaN or infinities fails the check whatever ONNX Runtime
returns: the same NaN on both sides would compare as equal and pass without checking
anything. The error names the input set and the output, and, for a float16 or bfloat16
model, says to export it in float32 (the usual cause: a value past the dtype's range).

Example::

    >>> report = validate_causal_lm(model, "model.onnx")  # doctest: +SKIP
    >>> report.table()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from diag import contract
from diag.compat.moe_blocks import float64_copy
from diag.export.check.tolerance import (
    NOISE_FACTOR,
    QUANTIZED_RTOL,
    accumulation_length,
    aligned_to_torch,
    default_atol,
    max_abs,
    noise_aware_tolerance,
    relative_rms,
)
from diag.export.check.validation_inputs import (
    DEFAULT_INPUT_SETS,
    InputSet,
    make_step_inputs,
    run_torch,
    step_feeds,
)
from diag.export.plan.dtype import dtype_name

if TYPE_CHECKING:
    pass


class ExportValidationError(AssertionError):
    """The exported model does not compute what the torch model computes."""


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
        if row.get("torch_nonfinite"):  # nothing to compare against
            return False
        if "rtol" in row:  # a quantized file: the relative RMS difference
            return row["relative"] <= row["rtol"]
        return row["max_abs"] <= self._tolerance(row, self.atol)

    @property
    def ok(self) -> bool:
        return all(self._passes(r) for r in self.rows)

    @property
    def torch_nonfinite(self) -> list[dict[str, Any]]:
        """The rows whose torch output holds NaN or infinities (``torch_nonfinite``:
        how many values)."""
        return [r for r in self.rows if r.get("torch_nonfinite")]

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
            if r.get("torch_nonfinite"):
                row[f"{r['output']} torch non-finite"] = r["torch_nonfinite"]
            elif "relative" in r:
                row[f"{r['output']} relative"] = r["relative"]
            elif self._tolerance(r, self.atol) != self.atol:
                row[f"{r['output']} tolerance"] = self._tolerance(r, self.atol)
        return out

    def table(self, width: int = 88) -> str:
        """A small text table, one line per input set, each column as narrow as its
        cells; wider than ``width`` characters (a docs page holds about 88), the logits
        and the cache come in two tables one under the other. ``(<= x)`` marks a
        tolerance raised to :data:`NOISE_FACTOR` times the float32 noise."""
        groups = ["logits", "present.key", "present.value"]
        rows = {}
        for name, row in self.as_dict().items():
            cells = {"inputs": name, "shapes": row["shapes"]}
            for g in groups:
                cell = f"{row.get(g, float('nan')):.3g}"
                if f"{g} torch non-finite" in row:
                    cell += f" (torch: {row[f'{g} torch non-finite']} non-finite)"
                elif f"{g} relative" in row:
                    cell += f" (rel {row[f'{g} relative']:.2g})"
                elif f"{g} tolerance" in row:
                    cell += f" (<= {row[f'{g} tolerance']:.2g})"
                cells[g] = cell
            rows[name] = cells
        lines = _grid(["inputs", "shapes", *groups], rows)
        if max(map(len, lines)) > width:
            lines = [
                *_grid(["inputs", "shapes", "logits"], rows),
                "",
                *_grid(["inputs", "present.key", "present.value"], rows),
            ]
        verdict = "OK" if self.ok else "FAILED"
        if self.quantization is not None:
            bits = self.quantization.get("bits")
            rtol = QUANTIZED_RTOL.get(bits, max(QUANTIZED_RTOL.values()))
            lines.append(
                f"tolerance of an int{bits} quantized export: relative RMS difference (rel)\n"
                f"<= {rtol:g} per output (quantization error, not float32 rounding): {verdict}"
            )
        else:
            lines.append(f"tolerance {self.atol:g}: {verdict}")
        return "\n".join(lines)


def _grid(header: list[str], rows: dict[str, dict[str, str]]) -> list[str]:
    """The columns ``header`` of ``rows`` aligned: the names (inputs, shapes) to the
    left, the numbers to the right."""
    body = [[cells[h] for h in header] for cells in rows.values()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return [
        "  ".join(
            f"{c:<{w}}" if h in ("inputs", "shapes") else f"{c:>{w}}"
            for h, c, w in zip(header, cells, widths, strict=True)
        ).rstrip()
        for cells in [header, *body]
    ]


def _nonfinite(values: torch.Tensor | list[torch.Tensor]) -> int:
    """How many NaN or infinite values a torch output (or a list of them) holds."""
    tensors = values if isinstance(values, list) else [values]
    return sum(int((~torch.isfinite(t)).sum()) for t in tensors)


def _nonfinite_error(
    filename: str | os.PathLike, dtype: torch.dtype, report: ValidationReport
) -> str:
    """The message of a check that torch's own NaN or infinities make vacuous."""
    where = ", ".join(
        f"{r['output']} on {r['inputs']} ({r['torch_nonfinite']} values)"
        for r in report.torch_nonfinite
    )
    if dtype in (torch.float16, torch.bfloat16):
        fix = (
            f"A {dtype_name(dtype)} model usually gets there by a value past "
            "its range: export it in float32 (export_causal_lm(..., dtype='float32'), "
            "python -m diag export --dtype float32)."
        )
    else:
        fix = "Check the model itself (its weights, its config) before exporting it."
    return (
        f"the ONNX model {os.fspath(filename)!r} cannot be checked: the torch model itself "
        f"returns NaN or infinities in {where}, which would compare as equal to the "
        f"same values in ONNX Runtime and pass without checking anything.\n{report.table()}\n" + fix
    )


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
    # a static cache export (diag.contract.STATIC_LAYOUT): the same step, its past in
    # buffers of max_length positions; the positions written are compared
    static = contract.metadata_static_cache(session)
    feeds = step_feeds(inputs, [n for n in input_names if n != contract.CACHE_POSITION], full_past)
    if static is not None:
        from diag.export.make.static_export import static_feeds

        feeds = static_feeds(feeds, static["max_length"])
    logits, keys, values = run_torch(model, inputs)
    got = dict(zip(output_names, session.run(None, feeds), strict=True))
    if static is not None:
        total = inputs[contract.ATTENTION_MASK].shape[1]
        got = {k: v if k == contract.LOGITS else v[:, :, :total] for k, v in got.items()}
    ids = inputs[contract.INPUT_IDS]
    shapes = f"b={ids.shape[0]} s={ids.shape[1]} p={inputs[contract.ATTENTION_MASK].shape[1] - ids.shape[1]}"
    torch_side = {"logits": logits, "present.key": keys, "present.value": values}
    onnx_side = {
        "logits": got[contract.LOGITS],
        "present.key": [
            aligned_to_torch(t, got[contract.present_key_name(i)]) for i, t in enumerate(keys)
        ],
        "present.value": [
            aligned_to_torch(t, got[contract.present_value_name(i)]) for i, t in enumerate(values)
        ],
    }
    rows = [
        {
            "inputs": name,
            "shapes": shapes,
            "output": g,
            "max_abs": max_abs(torch_side[g], onnx_side[g]),
            "torch_nonfinite": _nonfinite(torch_side[g]),
        }
        for g in torch_side
    ]
    if quantized_rtol is not None:
        for r in rows:
            r["relative"] = relative_rms(
                torch_side[r["output"]], onnx_side[r["output"]], inputs[contract.ATTENTION_MASK]
            )
            r["rtol"] = quantized_rtol
        return rows
    if reference is not None and any(r["max_abs"] > atol for r in rows):
        logits64, keys64, values64 = run_torch(reference(), inputs, dtype=torch.float64)
        exact = {"logits": logits64, "present.key": keys64, "present.value": values64}
        for r in rows:
            noise = max_abs(exact[r["output"]], torch_side[r["output"]])
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
        dtype and hidden size (:func:`~diag.export.check.tolerance.default_atol`)
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
    import onnxruntime as ort

    from diag.models.cache_layout import cache_layout

    dtype = next(model.parameters()).dtype
    if atol is None:
        atol = default_atol(dtype, accumulation_length(model))
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
            copies.append(float64_copy(model))
        return copies[0]

    ref = reference if noise_floor else None
    layout = cache_layout(model)
    if rtol is not None:
        # a random past: far off what a quantized model was made for (module docstring)
        input_sets = [spec for spec in input_sets if spec.past == 0]
        dummy_inputs = None
    if contract.metadata_static_cache(session) is not None:
        # a static export's dummy inputs are buffers, not a cache the torch model takes;
        # the input sets below check it against the model's own (dynamic) forward
        dummy_inputs = None
    attention = contract.metadata_attention(session)
    if attention is not None and attention.get("padding") == "right":
        # GroupQueryAttention takes right-padded rows (the drivers move the padding):
        # a left-padded input set means another thing to it (the generation tests check
        # padded batches through the drivers); its CPU kernel refuses several tokens
        # after a cache on a batch of several rows: the dummy inputs are such a step
        input_sets = [spec for spec in input_sets if not spec.left_padding]
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
                model,
                session,
                inputs,
                spec.name,
                atol,
                ref,
                full_past=full_past,
                quantized_rtol=rtol,
            )  # fmt: skip
        )
    copies.clear()
    if verbose:
        print(report.table())
    if raise_on_error and report.torch_nonfinite:
        raise ExportValidationError(_nonfinite_error(filename, dtype, report))
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
