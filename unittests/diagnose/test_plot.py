from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from diag.diagnose import plot_layers, plot_teacher_forced  # noqa: E402
from diag.diagnose.layers import LayerLocalization  # noqa: E402


def _df(batch: int = 1) -> pd.DataFrame:
    rows = []
    for step in range(4):
        for b in range(batch):
            rows.append(
                dict(step=step, batch=b, max_abs_diff=10.0 ** (step - 6), kl_div=0.0,
                     argmax_agree=step != 2, top5_overlap=1.0 - 0.2 * (step == 2))
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_plot_teacher_forced_draws_the_table(tmp_path):
    ax = plot_teacher_forced(_df())
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["max |logits diff|", "KL(torch || onnx)"]
    y = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(y, [1e-6, 1e-5, 1e-4, 1e-3])
    # KL of 0 is drawn at a floor, not dropped from the log scale
    assert (ax.get_lines()[1].get_ydata() > 0).all()
    # the step whose argmax differs is marked
    (marks,) = ax.collections
    np.testing.assert_allclose(marks.get_offsets(), [[2, 1e-4]])
    assert ax.overlap_axis.get_lines()[0].get_ydata()[2] == pytest.approx(0.8)
    ax.figure.savefig(tmp_path / "tf.png")
    assert (tmp_path / "tf.png").stat().st_size > 1000
    plt.close(ax.figure)


def test_plot_teacher_forced_one_line_per_row_and_given_axes():
    fig, ax = plt.subplots()
    out = plot_teacher_forced(_df(batch=2), ax=ax, title="x")
    assert out is ax and ax.get_title() == "x"
    assert len(ax.get_lines()) == 4 and "(row 1)" in ax.get_lines()[2].get_label()
    plt.close(fig)


def test_plot_teacher_forced_rejects_other_tables():
    with pytest.raises(ValueError, match="compare_teacher_forced"):
        plot_teacher_forced(pd.DataFrame({"a": [1]}))


def test_plot_layers_highlights_the_culprit():
    table = pd.DataFrame(
        dict(stage=["emb", "layers.0", "layers.1", "logits"], max_abs_diff=[0.0, 1e-7, 0.3, 0.5],
             ok=[True, True, False, False])
    )  # fmt: skip
    report = LayerLocalization(
        table=table, culprit="layers.1", culprit_layer=1, tol=1e-4, method="x"
    )
    ax = plot_layers(report)
    assert [b.get_height() for b in ax.patches][1:] == pytest.approx([1e-7, 0.3, 0.5])
    bars = ax.patches
    assert len(bars) == 4
    colors = [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars]
    assert colors[2] == "#c44e52" and colors[0] == colors[1] != colors[2]
    assert "layers.1" in ax.get_title()
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(1e-4)  # the tolerance line
    plt.close(ax.figure)
    # with the scaled difference (what the tolerance applies to), that is what is drawn
    scaled = report.table.assign(scaled_diff=[0.0, 1e-8, 0.03, 0.05])
    ax = plot_layers(LayerLocalization(scaled, "layers.1", 1, 1e-4, "x"))
    assert [b.get_height() for b in ax.patches][1:] == pytest.approx([1e-8, 0.03, 0.05])
    assert ax.get_ylabel().startswith("scaled")
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="localize_layer"):
        plot_layers(pd.DataFrame({"a": [1]}))
