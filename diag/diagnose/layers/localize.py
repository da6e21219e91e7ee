"""Which decoder layer makes an exported model differ from torch.

:func:`localize_layer` runs one input through the torch model and through the ONNX
model and compares, stage by stage, the embeddings, the output of every decoder layer,
the final norm and the logits. The first stage whose difference exceeds the tolerance
is the culprit: an export bug (a wrong weight, a broken attention mask, a bad
rewriting) shows up in the first layer that computes it and spreads to every later one.

The torch values come from forward hooks (:mod:`.torch_capture`), the ONNX ones are
found in the file as it is and exposed as extra outputs (:mod:`.onnx_intermediates`).
A module may have several candidate values (the key/value ``present`` tensors a layer
also produces): the one whose shape at run time equals the torch output's is the
match; if several do, the last produced.

On a mixture-of-experts model the router of each layer is read too
(:mod:`.routing`): ``details["routing"]`` lists the tokens whose experts differ
between the two sides (layer, token, both expert sets, both router margins), which
the report prints after the table: a near tie in routing moves a whole expert's
output, more than any rounding.

Tolerance
---------

Each stage gets a ``scaled_diff``: at every position (token), the max absolute
difference divided by ``max(1, RMS)`` of torch's vector at that position
(:func:`scaled_difference`); the stage agrees when it is at most ``tol``. Hidden
states of real models have *massive activations* (SmolLM2: ~25,000 on one channel of
the first token, ~10 elsewhere); their float32 rounding (~0.02 there) would trip an
absolute tolerance on every healthy layer, while a tolerance relative to the whole
tensor's maximum would hide real errors on the ordinary tokens.

The report reads (a hand-made table here; :func:`localize_layer` fills it):

>>> rows = [dict(stage="model.layers.0", kind="layer", layer=0, onnx_name="add_7",
...              shape=(1, 3, 8), max_abs_diff=2e-6, scaled_diff=2e-6, ok=True),
...         dict(stage="model.layers.1", kind="layer", layer=1, onnx_name="add_15",
...              shape=(1, 3, 8), max_abs_diff=0.31, scaled_diff=0.08, ok=False)]
>>> report = LayerLocalization(pd.DataFrame(rows), culprit="model.layers.1",
...                            culprit_layer=1, tol=1e-4, method="module scopes")
>>> print(report)
first stage beyond tol=0.0001: model.layers.1 (max abs diff 0.31, scaled 0.08)
         stage onnx_name  max_abs_diff  scaled_diff    ok
model.layers.0     add_7      0.000002     0.000002  True
model.layers.1    add_15      0.310000     0.080000 False
>>> report.agrees
False
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch

from diag.contract.detect import find_model
from diag.diagnose.layers.inputs import normalize_inputs, onnx_feeds
from diag.diagnose.layers.onnx_intermediates import (
    candidates_from_residuals,
    candidates_from_scopes,
    load_model,
    logits_name,
    session_with_outputs,
)
from diag.diagnose.layers.routing import router_candidates, router_modules, routing_flips
from diag.diagnose.layers.stages import Stage, model_stages
from diag.diagnose.layers.torch_capture import run_torch
from diag.export.check.tolerance import DEFAULT_TERMS, accumulation_length
from diag.export.plan.dtype import model_in_dtype
from diag.helpers.dtypes import onnx_dtype_to_torch_dtype
from diag.helpers.rounding import accumulation_tolerance
from diag.helpers.torch_helper import get_weight_type
from diag.helpers.wrap import wrap_report


@dataclass
class LayerLocalization:
    """Result of :func:`localize_layer`.

    ``table`` has one row per stage (``stage``, ``kind``, ``layer``, ``onnx_name``,
    ``shape``, ``max_abs_diff``, ``scaled_diff`` (see :func:`scaled_difference`),
    ``ok``); ``culprit`` is the name of
    the first stage beyond the tolerance (None when every stage agrees) and
    ``culprit_layer`` its decoder-layer index (None for other stages).
    """

    table: pd.DataFrame
    culprit: str | None
    culprit_layer: int | None
    tol: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        """True when every stage is within the tolerance."""
        return self.culprit is None

    def __str__(self) -> str:
        if self.culprit is None:
            worst = float(self.table["max_abs_diff"].max()) if len(self.table) else 0.0
            scaled = float(self.table["scaled_diff"].max()) if len(self.table) else 0.0
            compared = int(self.table["ok"].notna().sum()) if len(self.table) else 0
            # the tolerance bounds the scaled difference; the absolute one is larger on
            # the tokens with massive activations, and said so
            head = (
                f"all {compared} stages agree: scaled difference {scaled:.3g} <= "
                f"tol={self.tol:g} (max |diff| / max(1, RMS) per position; the max abs "
                f"diff, {worst:.3g}, is on the largest activations)"
            )
        else:
            row = self.table[self.table["stage"] == self.culprit].iloc[0]
            head = (
                f"first stage beyond tol={self.tol:g}: {self.culprit} "
                f"(max abs diff {row['max_abs_diff']:.3g}, scaled {row['scaled_diff']:.3g})"
            )
        cols = ["stage", "onnx_name", "max_abs_diff", "scaled_diff", "ok"]
        text = f"{wrap_report(head)}\n{self.table[cols].to_string(index=False)}"
        unmatched = self.details.get("unmatched")
        if unmatched:
            text += f"\nnot found in the ONNX graph (not compared): {', '.join(unmatched)}"
        flips = self.details.get("routing")
        if flips:
            text += f"\nthe router chose other experts for {len(flips)} token(s):"
            text += "".join(f"\n  {flip}" for flip in flips)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "culprit": self.culprit,
            "culprit_layer": self.culprit_layer,
            "tol": self.tol,
            "method": self.method,
            "table": self.table.to_dict(orient="records"),
            "routing": [vars(flip) for flip in self.details.get("routing", [])],
        }


#: the default tolerance of :func:`localize_layer` on the scaled difference of a float32
#: model (see its ``tol``)
DEFAULT_TOL = 1e-3

#: the largest default tolerance: a difference of the size of the values themselves,
#: beyond which rounding and an error cannot be told apart
MAX_TOL = 1.0


def layer_tolerance(model: torch.nn.Module) -> float:
    """The default ``tol`` of :func:`localize_layer` for ``model``: :data:`DEFAULT_TOL` in
    float32; in float16 or bfloat16, the rounding bound of a sum of the model's hidden
    size in that dtype over values of RMS 1 (the bound export validation starts from,
    :func:`~diag.export.check.tolerance.default_atol`), at most :data:`MAX_TOL`.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> layer_tolerance(model), round(layer_tolerance(model.half()), 3)
    (0.001, 0.133)
    """
    dtype = get_weight_type(model)
    if dtype in (torch.float32, torch.float64):
        return DEFAULT_TOL
    try:
        bound = accumulation_tolerance(accumulation_length(model) or DEFAULT_TERMS, 1.0, dtype)
    except ValueError:  # no bound at all: the sum is longer than the dtype can round
        bound = MAX_TOL
    return max(DEFAULT_TOL, min(MAX_TOL, bound))


def scaled_difference(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """``(max |got - expected|, scaled difference)`` of two ``[..., hidden]`` tensors.

    The scaled difference is, over every position (every vector along the last
    dimension), ``max |got - expected|`` divided by ``max(1, RMS(expected))`` of that
    position. Hidden states have very different magnitudes from one token to another
    (SmolLM2 has *massive activations* of ~25,000 on its first token while the others
    stay near 10), and float32 rounding grows with the magnitude: a plain absolute
    tolerance flags healthy layers, a tolerance relative to the largest value of the
    whole tensor hides real errors on the ordinary tokens. Non-finite values give
    ``inf``.

    >>> e = torch.tensor([[[3.0, 4.0], [0.1, 0.0]]])  # RMS 3.54 and 0.07
    >>> d = scaled_difference(e, e + torch.tensor([[[0.0, 0.354], [0.01, 0.0]]]))
    >>> [round(x, 3) for x in d]  # the first position decides: 0.354 / 3.54
    [0.354, 0.1]
    """
    if expected.numel() == 0:
        return 0.0, 0.0
    if not bool(torch.isfinite(got).all()):
        return float("inf"), float("inf")
    diff = (got.float() - expected.float()).abs()
    rms = expected.float().pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1.0)
    return float(diff.max()), float((diff / rms).max())


def _logits_dtype(model_ir: Any) -> torch.dtype | None:
    """The torch dtype of the graph's logits (None when the file does not say)."""
    name = logits_name(model_ir)
    value = next(o for o in model_ir.graph.outputs if o.name == name)
    return None if value.dtype is None else onnx_dtype_to_torch_dtype(int(value.dtype))


def localize_layer(
    model: torch.nn.Module,
    onnx_model_path: str | os.PathLike | onnx.ModelProto,
    inputs: dict[str, Any] | torch.Tensor,
    tol: float | None = None,
    *,
    providers: list[str] | None = None,
) -> LayerLocalization:
    """Names the first stage (embedding, decoder layer, final norm, logits) where the
    ONNX model and the torch model disagree on one input.

    :param model: the torch causal LM (a transformers ``*ForCausalLM``)
    :param onnx_model_path: its export (path or ``onnx.ModelProto``), following
        :mod:`diag.contract`, or a folder another tool wrote (its first graph is read)
    :param inputs: ``{"input_ids": ..., "attention_mask": ..., "position_ids": ...,
        "cache": ...}`` (only ``input_ids`` required; the cache under ``cache`` or
        ``past_key_values``, either name on any transformers release; a missing cache
        means an empty one, a missing mask means all ones, missing positions follow the
        mask) or an ``input_ids`` tensor
    :param tol: a stage agrees when its ``scaled_diff`` is at most ``tol``: at every
        position (token), ``max |onnx - torch|`` divided by ``max(1, RMS of torch's
        vector at that position)``, see :func:`scaled_difference`. The default leaves
        room for float32 rounding through a deep model with fused kernels (a healthy
        SmolLM2 export, 30 layers, reaches 1.2e-4 at one layer) and stays far below an
        error (5% noise on one matrix of SmolLM2 gives 0.4 at the final norm). None:
        :func:`layer_tolerance`, that default for a float32 model, the rounding bound
        of the hidden size's sums for a float16 or bfloat16 one (a float16 SmolLM2
        export reaches 0.15 at one layer, rounding only). The torch model runs in the
        file's dtype (a copy when it is in another: a bfloat16 model's CPU export is
        float32), so the table is the export's own fidelity, not the dtype's effect
    :param providers: ONNX Runtime providers (CPU by default)
    :return: a :class:`LayerLocalization` (``.table`` per stage, ``.culprit``)

    See the module docstring for how the ONNX values are matched to the modules.

    Example::

        report = localize_layer(model, "model.onnx", {"input_ids": ids}, tol=1e-4)
        report.culprit        # 'model.layers.1' or None
        report.table          # stage, onnx_name, max_abs_diff, ok...
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"localize_layer expects a torch model, got {type(model).__name__}.")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be a positive float, got {tol!r}.")
    if isinstance(onnx_model_path, (str, os.PathLike)) and os.path.isdir(onnx_model_path):
        # a folder another tool wrote: its first graph (the prefill of a pair)
        onnx_model_path = find_model(onnx_model_path).paths[0]
    model_ir = load_model(onnx_model_path)
    # like with like: torch in the file's dtype (a bfloat16 model's CPU export is float32,
    # and bfloat16's own rounding is no export error)
    file_dtype = _logits_dtype(model_ir)
    if file_dtype is not None and file_dtype.is_floating_point:
        model = model_in_dtype(model, file_dtype)
    if tol is None:
        tol = layer_tolerance(model)
    feeds = normalize_inputs(inputs, model)
    stages = model_stages(model)

    method = "module scopes"
    cands = candidates_from_scopes(model_ir, stages)
    missing = [
        s.name for s in stages if s.kind == "layer" and (cands is None or s.name not in cands)
    ]
    if cands is None or missing:
        method = "residual stream"
        cands = candidates_from_residuals(model_ir, stages)

    # mixture-of-experts layers: the router's logits on both sides (routing.py)
    routers = router_modules(model, stages)
    router_stages = [Stage(name, "router", layer, model.get_submodule(name))
                     for layer, (name, _) in routers.items()]  # fmt: skip
    router_values = router_candidates(model_ir, routers)
    expected = run_torch(model, stages + router_stages, feeds)
    logits = logits_name(model_ir)
    wanted = {n for names in [*cands.values(), *router_values.values()] for n in names}
    wanted = sorted(wanted | {logits})
    ort_feeds = onnx_feeds(model_ir, feeds, model)
    sess = session_with_outputs(model_ir, wanted, providers)
    del model_ir  # the session holds its own copy of the weights
    values = dict(zip(wanted, sess.run(wanted, ort_feeds), strict=True))

    rows = []
    culprit: Stage | None = None
    for st in stages:
        ref = expected.get(st.name)
        names = [logits] if st.kind == "logits" else cands.get(st.name, [])
        if ref is None:
            continue
        shaped = [n for n in names if tuple(values[n].shape) == tuple(ref.shape)]
        if not shaped:
            rows.append(
                dict(stage=st.name, kind=st.kind, layer=st.layer, onnx_name=None,
                     shape=tuple(ref.shape), max_abs_diff=np.nan, scaled_diff=np.nan, ok=None)
            )  # fmt: skip
            continue
        name = shaped[-1]  # the last value a module produces is its output
        got = torch.from_numpy(np.asarray(values[name], dtype=np.float32))
        max_abs, scaled = scaled_difference(ref, got)
        ok = bool(scaled <= tol)
        rows.append(
            dict(stage=st.name, kind=st.kind, layer=st.layer, onnx_name=name,
                 shape=tuple(ref.shape), max_abs_diff=max_abs, scaled_diff=scaled, ok=ok)
        )  # fmt: skip
        if not ok and culprit is None:
            culprit = st
    flips = []
    for layer, (name, top_k) in routers.items():
        ref = expected[name]
        shaped = [n for n in router_values[name] if tuple(values[n].shape) == tuple(ref.shape)]
        if shaped:  # the first value of the router's shape is its logits
            got = np.asarray(values[shaped[0]], dtype=np.float32)
            flips += routing_flips(layer, top_k, ref.numpy(), got)
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    return LayerLocalization(
        table=table,
        culprit=culprit.name if culprit else None,
        culprit_layer=culprit.layer if culprit else None,
        tol=tol,
        method=method,
        details={
            "unmatched": [r["stage"] for r in rows if r["onnx_name"] is None],
            "routing": flips,
        },
    )


__all__ = [
    "DEFAULT_TOL",
    "LayerLocalization",
    "layer_tolerance",
    "localize_layer",
    "scaled_difference",
]
