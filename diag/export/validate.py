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
one exceeds the tolerance (float32: 1e-4).

Example::

    >>> report = validate_causal_lm(model, "model.onnx")  # doctest: +SKIP
    >>> report.table()  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diag.export import contract

# absolute tolerance on logits and cache, per dtype of the model
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


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
    output group; ``ok`` is False when one exceeds ``atol``."""

    atol: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r["max_abs"] <= self.atol for r in self.rows)

    @property
    def max_abs(self) -> float:
        return max((r["max_abs"] for r in self.rows), default=0.0)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{input set: {"shapes": ..., "logits": ..., "present.key": ..., "present.value": ...}}``"""
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            out.setdefault(r["inputs"], {"shapes": r["shapes"]})[r["output"]] = r["max_abs"]
        return out

    def table(self) -> str:
        """A small text table, one line per input set."""
        groups = ["logits", "present.key", "present.value"]
        lines = [f"{'inputs':<22} {'shapes':<22} " + " ".join(f"{g:>13}" for g in groups)]
        for name, row in self.as_dict().items():
            cells = " ".join(f"{row.get(g, float('nan')):>13.3g}" for g in groups)
            lines.append(f"{name:<22} {row['shapes']:<22} {cells}")
        lines.append(f"tolerance {self.atol:g}: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def takes_position_ids(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` accepts ``position_ids``."""
    return "position_ids" in inspect.signature(model.forward).parameters


def make_step_inputs(
    config: Any,
    batch: int,
    seq: int,
    past: int,
    left_padding: int = 0,
    with_position_ids: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, Any]:
    """Inputs of one step of any shape, ``past`` may be 0, the first row may be
    left-padded: ``input_ids``, ``attention_mask``, ``position_ids`` (positions of the
    real tokens) and ``past_key_values`` (a DynamicCache built like the model builds it)."""
    from diag.helpers.cache_helper import make_dynamic_cache
    from diag.models.inputs import decoder_dims

    dims = decoder_dims(config)
    if left_padding >= past + seq:
        raise ValueError(
            f"left_padding={left_padding} leaves no real token in {past + seq} positions"
        )
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, dims.num_kv_heads, past, dims.head_dim)
    pairs = [
        (torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype))
        for _ in range(dims.num_layers)
    ]
    mask = torch.ones((batch, past + seq), dtype=torch.int64)
    mask[0, :left_padding] = 0
    inputs: dict[str, Any] = {
        contract.INPUT_IDS: torch.randint(0, dims.vocab_size, (batch, seq), generator=gen),
        contract.ATTENTION_MASK: mask,
    }
    if with_position_ids:
        # padding tokens get position 0 (what generate does), real ones count from 0
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs[contract.POSITION_IDS] = positions[:, past:].contiguous()
    inputs["past_key_values"] = make_dynamic_cache(pairs, config=config)
    return inputs


def _feeds(inputs: dict[str, Any], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    from diag.helpers.cache_helper import cache_to_list

    feeds: dict[str, np.ndarray] = {}
    for name in (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.POSITION_IDS):
        if name in inputs:
            feeds[name] = inputs[name].cpu().numpy()
    for i, (k, v) in enumerate(cache_to_list(inputs["past_key_values"])):
        feeds[contract.past_key_name(i)] = k.detach().cpu().numpy()
        feeds[contract.past_value_name(i)] = v.detach().cpu().numpy()
    missing = set(input_names) - set(feeds)
    if missing:
        raise ValueError(
            f"the ONNX model expects inputs {sorted(missing)} the validation does not build"
        )
    return {k: feeds[k] for k in input_names}


def _max_abs(expected: torch.Tensor, got: np.ndarray) -> float:
    exp = expected.detach().to(torch.float64).cpu()
    res = torch.from_numpy(np.asarray(got)).to(torch.float64)
    if exp.shape != res.shape:
        if exp.dim() == 4 and res.dim() == 4 and exp.shape[2] < res.shape[2]:
            # a sliding-window layer keeps the last positions in torch, all of them in ONNX
            res = res[:, :, res.shape[2] - exp.shape[2] :, :]
        else:
            return float("inf")
    if exp.numel() == 0:
        return 0.0
    if torch.isnan(exp).any() or torch.isnan(res).any():
        both = torch.isnan(exp) & torch.isnan(res)
        if not torch.equal(torch.isnan(exp), torch.isnan(res)):
            return float("inf")
        exp, res = exp[~both], res[~both]
    return float((exp - res).abs().max()) if exp.numel() else 0.0


def compare_one(
    model: torch.nn.Module,
    session: Any,
    inputs: dict[str, Any],
    name: str,
) -> list[dict[str, Any]]:
    """Runs torch and ONNX Runtime on ``inputs``; returns one row per output group."""
    from diag.helpers.cache_helper import cache_to_list

    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    feeds = _feeds(inputs, input_names)  # before torch grows the cache in place
    device = next(model.parameters()).device
    torch_inputs = dict(inputs)
    for k in (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.POSITION_IDS):
        if k in torch_inputs:
            torch_inputs[k] = torch_inputs[k].to(device)
    with torch.no_grad():
        expected = model(**torch_inputs, use_cache=True)
    got = dict(zip(output_names, session.run(None, feeds), strict=True))
    present = cache_to_list(expected.past_key_values)
    ids = inputs[contract.INPUT_IDS]
    shapes = f"b={ids.shape[0]} s={ids.shape[1]} p={inputs[contract.ATTENTION_MASK].shape[1] - ids.shape[1]}"
    rows = [
        {
            "inputs": name,
            "shapes": shapes,
            "output": "logits",
            "max_abs": _max_abs(expected.logits, got[contract.LOGITS]),
        }
    ]
    for group, index, make_name in (
        ("present.key", 0, contract.present_key_name),
        ("present.value", 1, contract.present_value_name),
    ):
        diffs = [_max_abs(pair[index], got[make_name(i)]) for i, pair in enumerate(present)]
        rows.append(
            {"inputs": name, "shapes": shapes, "output": group, "max_abs": max(diffs, default=0.0)}
        )
    return rows


def validate_causal_lm(
    model: torch.nn.Module,
    filename: str | os.PathLike,
    dummy_inputs: dict[str, Any] | None = None,
    input_sets: Sequence[InputSet] = DEFAULT_INPUT_SETS,
    atol: float | None = None,
    raise_on_error: bool = True,
    verbose: int = 0,
) -> ValidationReport:
    """Compares the ONNX model ``filename`` with ``model`` on several input sets.

    :param model: the torch causal LM the file was exported from
    :param filename: the exported model (following :mod:`diag.export.contract`)
    :param dummy_inputs: the export inputs, checked first when given (not modified)
    :param input_sets: the other shapes to check
    :param atol: tolerance on the absolute difference; None picks it from the model's
        dtype (:data:`TOLERANCES`)
    :param raise_on_error: raises :class:`ExportValidationError` above tolerance
    :param verbose: prints the table
    :return: the :class:`ValidationReport`
    """
    import copy

    import onnxruntime as ort

    dtype = next(model.parameters()).dtype
    if atol is None:
        atol = TOLERANCES.get(dtype, 1e-2)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(filename), options, providers=["CPUExecutionProvider"])
    with_position_ids = contract.POSITION_IDS in {i.name for i in session.get_inputs()}
    report = ValidationReport(atol=atol)
    if dummy_inputs is not None:
        report.rows.extend(compare_one(model, session, copy.deepcopy(dummy_inputs), "dummy"))
    for k, spec in enumerate(input_sets):
        inputs = make_step_inputs(
            model.config,
            spec.batch,
            spec.seq,
            spec.past,
            left_padding=spec.left_padding,
            with_position_ids=with_position_ids,
            dtype=dtype,
            seed=k + 1,
        )
        report.rows.extend(compare_one(model, session, inputs, spec.name))
    if verbose:
        print(report.table())
    if raise_on_error and not report.ok:
        raise ExportValidationError(
            f"the ONNX model {os.fspath(filename)!r} differs from torch by more than "
            f"atol={atol:g}:\n{report.table()}\nThe export is not reusable: run with verbose=1 "
            "to see the patches applied, or report the model and these figures."
        )
    return report
