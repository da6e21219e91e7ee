"""The comparison table of ``diag compare`` (pandas), its CSV and its bar plot (matplotlib).

Example::

    table = comparison_table(runs, reference="hf", failed=set(), max_logit_diffs={})
    save_csv(table, "out/compare.csv"), save_bar_plot(table, "out/compare.png", title="...")
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas

from diag.cli.runners import BACKEND_LABELS
from diag.generation.result import GenerateResult
from diag.helpers.atomic_write import write_atomically

COLUMNS = [
    "backend",
    "function",
    "prompts",
    "duration_s",
    "new_tokens",
    "tokens_per_s",
    "parity",
    "max_abs_logit_diff",
]


def comparison_table(
    runs: dict[str, list[tuple[GenerateResult, float]]],
    reference: str,
    failed: set[str],
    max_logit_diffs: dict[str, float],
    order: Iterable[str] | None = None,
) -> pandas.DataFrame:
    """One row per backend: total duration and new tokens over the prompts, tokens/s,
    parity with ``reference`` (``reference``, ``OK`` or ``FAIL``) and the largest logit
    difference to the reference (up to the first divergence).

    ``runs[name]`` holds what the runner of backend ``name``
    (:mod:`diag.cli.runners`) returned for every prompt: the
    :class:`~diag.generation.result.GenerateResult` and the wall time of the call.
    """
    rows = []
    for name in order or runs:
        seconds = sum(s for _, s in runs[name])
        tokens = sum(sum(r.num_generated_tokens) for r, _ in runs[name])
        if name == reference:
            parity = "reference"
        else:
            parity = "FAIL" if name in failed else "OK"
        rows.append(
            {
                "backend": name,
                "function": BACKEND_LABELS.get(name, name),
                "prompts": len(runs[name]),
                "duration_s": seconds,
                "new_tokens": tokens,
                "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
                "parity": parity,
                "max_abs_logit_diff": max_logit_diffs.get(name, float("nan")),
            }
        )
    return pandas.DataFrame(rows, columns=COLUMNS)


def save_csv(table: pandas.DataFrame, path: str) -> str:
    """Writes ``table`` to ``path`` atomically; returns the absolute path."""
    return write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


_COLORS = {"reference": "tab:blue", "OK": "tab:green", "FAIL": "tab:red"}


def save_bar_plot(table: pandas.DataFrame, path: str, title: str = "") -> str:
    """Bar plots of the duration and the tokens/s of every backend, colored by parity,
    written to ``path`` (PNG) atomically; returns the absolute path."""
    # Figure + the Agg canvas, without pyplot: no global backend switch, no window
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    labels = [f"{b}\n{f}" for b, f in zip(table["backend"], table["function"], strict=True)]
    colors = [_COLORS.get(p, "tab:gray") for p in table["parity"]]
    for ax, column, unit in zip(
        fig.subplots(1, 2),
        ("duration_s", "tokens_per_s"),
        ("duration (s)", "new tokens / s"),
        strict=True,
    ):
        bars = ax.bar(labels, table[column], color=colors)
        ax.bar_label(bars, fmt="%.3g")
        ax.set_ylabel(unit)
        ax.set_title(unit + (" (lower is better)" if column == "duration_s" else ""))
        ax.margins(y=0.15)
    if title:
        fig.suptitle(title)
    handles = [
        _legend_patch(color, label)
        for label, color in _COLORS.items()
        if label in set(table["parity"])
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), title="parity")
    return write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _legend_patch(color: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)
