"""Plots of the diagnosis results (matplotlib).

* :func:`plot_teacher_forced`: the per-step table of
  :func:`~diag.diagnose.compare_teacher_forced`;
* :func:`plot_layers`: the per-stage table of :func:`~diag.diagnose.localize_layer`;
* :func:`plot_quantization`: a :func:`~diag.diagnose.quantization.quantization_report`.

Example::

    ax = plot_teacher_forced(compare_teacher_forced(model, "model.onnx", ids))
    ax.figure.savefig("teacher_forced.png")
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

_FLOOR = 1e-12  # zeros cannot be drawn on a log scale


def _overlap_column(df: pd.DataFrame) -> str | None:
    cols = [c for c in df.columns if str(c).startswith("top") and str(c).endswith("_overlap")]
    return cols[0] if cols else None


def plot_teacher_forced(df: pd.DataFrame, ax: Any = None, title: str | None = None) -> Any:
    """Draws a :func:`~diag.diagnose.compare_teacher_forced` table.

    Left axis (log scale): the max absolute logits difference and the KL divergence
    per step; right axis: the top-k overlap. Steps where the argmax differs are marked
    with red crosses. One line per batch row when the batch has several rows.

    :param df: the DataFrame returned by ``compare_teacher_forced``
    :param ax: a matplotlib Axes to draw in (a new figure when None)
    :param title: the title (a default one when None)
    :return: the Axes (its twin holding the overlap is ``ax.overlap_axis``)

    Example::

        ax = plot_teacher_forced(df)
        ax.figure.savefig("tf.png")
    """
    import matplotlib.pyplot as plt

    needed = {"step", "max_abs_diff", "kl_div", "argmax_agree"}
    if not isinstance(df, pd.DataFrame) or not needed <= set(df.columns):
        raise ValueError(
            "plot_teacher_forced expects the DataFrame returned by compare_teacher_forced "
            f"(columns {sorted(needed)}), got "
            + (f"columns {list(df.columns)}" if isinstance(df, pd.DataFrame) else type(df).__name__)
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    overlap = _overlap_column(df)
    twin = ax.twinx() if overlap else None
    groups = list(df.groupby("batch")) if "batch" in df.columns else [(0, df)]
    several = len(groups) > 1
    for row, part in groups:
        suffix = f" (row {row})" if several else ""
        steps = part["step"].to_numpy()
        ax.semilogy(steps, np.maximum(part["max_abs_diff"].to_numpy(float), _FLOOR),
                    marker="o", ms=3, label=f"max |logits diff|{suffix}")  # fmt: skip
        ax.semilogy(steps, np.maximum(part["kl_div"].to_numpy(float), _FLOOR),
                    marker=".", ms=3, linestyle="--", label=f"KL(torch || onnx){suffix}")  # fmt: skip
        bad = part[~part["argmax_agree"].astype(bool)]
        if len(bad):
            ax.scatter(bad["step"], np.maximum(bad["max_abs_diff"].to_numpy(float), _FLOOR),
                       marker="x", s=60, color="red", zorder=5,
                       label=f"argmax differs{suffix}")  # fmt: skip
        if twin is not None:
            twin.plot(steps, part[overlap].to_numpy(float), color="gray", alpha=0.6,
                      drawstyle="steps-mid", label=f"{overlap}{suffix}")  # fmt: skip
    ax.set_xlabel("step (0 = logits after the prompt)")
    ax.set_ylabel("logit difference / KL (log scale)")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        twin.set_ylim(-0.05, 1.05)
        twin.set_ylabel(overlap.replace("_", " "))
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.set_title(title or "Teacher-forced comparison, torch vs ONNX Runtime")
    ax.overlap_axis = twin
    return ax


def plot_layers(report: Any, ax: Any = None, title: str | None = None) -> Any:
    """Draws a :func:`~diag.diagnose.localize_layer` report: the scaled difference of
    every stage (the quantity compared with the tolerance, log scale; the max absolute
    difference for a table without it), the tolerance as a line, the culprit in red.

    :param report: the :class:`~diag.diagnose.layers.LayerLocalization` (or its table)
    :param ax: a matplotlib Axes (a new figure when None)
    :param title: the Axes' title (None: the first stage beyond tolerance, or "All
        stages agree")
    :return: the Axes

    Example::

        ax = plot_layers(localize_layer(model, "model.onnx", {"input_ids": ids}))
    """
    import matplotlib.pyplot as plt

    table = getattr(report, "table", report)
    if not isinstance(table, pd.DataFrame) or not {"stage", "max_abs_diff"} <= set(table.columns):
        raise ValueError("plot_layers expects the result of localize_layer (or its .table).")
    tol = getattr(report, "tol", None)
    culprit = getattr(report, "culprit", None)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.35 * len(table) + 2), 4))
    # the tolerance applies to the scaled difference (per-token, see scaled_difference)
    column = "scaled_diff" if "scaled_diff" in table.columns else "max_abs_diff"
    values = np.maximum(table[column].to_numpy(float), _FLOOR)
    ok = table["ok"] if "ok" in table.columns else pd.Series([True] * len(table))
    colors = ["#c44e52" if s == culprit else ("#dd8452" if o is not None and not o else "#4c72b0")
              for s, o in zip(table["stage"], ok, strict=True)]  # fmt: skip
    x = np.arange(len(table))
    ax.bar(x, values, color=colors)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([str(s) for s in table["stage"]], rotation=60, ha="right", fontsize=8)
    if tol is not None:
        ax.axhline(tol, color="black", linestyle=":", linewidth=1, label=f"tol = {tol:g}")
        ax.legend(fontsize=8)
    ax.set_ylabel(
        "scaled |onnx - torch| (log scale)"
        if column == "scaled_diff"
        else "max |onnx - torch| (log scale)"
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(
        title or (f"First stage beyond tolerance: {culprit}" if culprit else "All stages agree")
    )
    return ax


def plot_quantization(report: Any, axes: Any = None, title: str | None = None) -> Any:
    """Draws a :class:`~diag.diagnose.quantization.QuantizationReport`: left, the
    teacher-forced top-1 agreement and top-5 overlap of each prompt; right, the
    KL(torch || onnx) of every step per prompt (log scale), a cross at the step where
    the free-running streams part.

    :param report: the report
    :param axes: two matplotlib Axes (a new figure when None)
    :param title: the figure's title (None: a default one)
    :return: the two Axes

    Example::

        left, right = plot_quantization(quantization_report(model, "int4.onnx", prompts))
    """
    import matplotlib.pyplot as plt

    if not hasattr(report, "table") or not hasattr(report, "steps"):
        raise ValueError("plot_quantization expects the result of quantization_report.")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    left, right = axes
    per_prompt = report.table[report.table["prompt"] != "all"]
    x = np.arange(len(per_prompt))
    left.bar(x - 0.2, per_prompt["top1_agreement"], width=0.4, label="top-1 agreement")
    left.bar(x + 0.2, per_prompt["top5_overlap"], width=0.4, label="top-5 overlap")
    left.set_xticks(x)
    left.set_xticklabels([f"{i}: {p[:18]}" for i, p in enumerate(per_prompt["prompt"])],
                         rotation=30, ha="right", fontsize=8)  # fmt: skip
    left.set_ylim(0, 1.05)
    left.legend(fontsize=8, loc="lower right")
    left.set_title("teacher-forced agreement per prompt", fontsize=10)
    for i, part in report.steps.groupby("prompt"):
        steps = part["step"].to_numpy()
        kl = np.maximum(part["kl_div"].to_numpy(float), _FLOOR)
        (line,) = right.semilogy(steps, kl, marker=".", ms=3, label=f"prompt {i}")
        div = report.divergences[i]
        if div.step is not None and div.step < len(kl):
            right.scatter([div.step], [kl[div.step]], marker="x", s=60, color=line.get_color(),
                          zorder=5)  # fmt: skip
    right.set_xlabel("step (x: first free-running divergence)")
    right.set_ylabel("KL(torch || onnx), nats (log scale)")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=7, ncol=2)
    right.set_title("KL per teacher-forced step", fontsize=10)
    left.figure.suptitle(title or "What the quantized model does to the tokens")
    return left, right


__all__ = ["plot_layers", "plot_quantization", "plot_teacher_forced"]
