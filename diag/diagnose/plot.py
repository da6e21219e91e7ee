"""Plots of the diagnosis results (matplotlib).

* :func:`plot_teacher_forced`: the per-step table of
  :func:`~diag.diagnose.compare_teacher_forced`;
* :func:`plot_layers`: the per-stage table of :func:`~diag.diagnose.localize_layer`.

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


__all__ = ["plot_layers", "plot_teacher_forced"]
