"""The diagnose tools on folders other tools wrote: they agree with the torch model."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from diag.diagnose import compare_teacher_forced, first_divergence


@pytest.mark.parametrize("fixture", ["genai_tiny_llama", "transformers_tiny_llama"])
def test_teacher_forced_and_first_divergence(request, fixture):
    model, folder = request.getfixturevalue(fixture)
    ids = torch.tensor([[1, 5, 7, 9, 11], [2, 2, 1, 8, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    df = compare_teacher_forced(model, str(folder), ids, mask, max_new_tokens=8)
    assert len(df) == 16
    assert df["argmax_agree"].all()
    assert df["max_abs_diff"].max() < 1e-3
    div = first_divergence(model, str(folder), ids, mask, max_new_tokens=8, eos_token_id=None)
    assert not div, div


def test_localize_layer_on_transformers_exporter(transformers_tiny_llama):
    from diag.diagnose import localize_layer

    model, folder = transformers_tiny_llama
    ids = torch.tensor([[1, 5, 7, 9]])
    report = localize_layer(model, str(folder), ids)
    # transformers' exporter keeps torch's module scopes: every stage is matched
    assert report.culprit is None and report.method == "module scopes"
    assert report.table["ok"].all() and len(report.table) == 5


def test_localize_layer_on_genai_folder(genai_tiny_llama, tmp_path):
    """genai's builder writes no module scopes: the residual stream is followed from its
    embedding lookup (a Gather of the transposed, tied lm_head weight) through its fused
    skip norms, whose final one does not return the last layer's sum (exposed)."""
    from diag.diagnose import localize_layer

    model, genai = genai_tiny_llama
    ids = torch.tensor([[1, 5, 7, 9]])
    report = localize_layer(model, str(genai), ids)
    assert report.method == "residual stream" and report.culprit is None
    table = report.table.set_index("stage")
    assert table["ok"].all() and table["onnx_name"].notna().all() and len(table) == 5
    assert table.loc["model.layers.1", "onnx_name"].endswith("/residual_sum")
    # the same folder with noise on layer 1's MLP: that layer is named, the one before agrees
    proto = onnx.load(str(genai / "model.onnx"))
    (weight,) = [t for t in proto.graph.initializer if "layers.1.mlp.down_proj" in t.name]
    noisy = numpy_helper.to_array(weight) + 0.2 * np.random.default_rng(0).standard_normal(weight.dims)
    weight.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), weight.name))
    broken = tmp_path / "broken"
    shutil.copytree(genai, broken, ignore=shutil.ignore_patterns("model.onnx*"))
    onnx.save(proto, str(broken / "model.onnx"))
    report = localize_layer(model, str(broken), ids)
    assert report.culprit == "model.layers.1"
    assert report.table.set_index("stage").loc["model.layers.0", "ok"]
