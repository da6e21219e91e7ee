"""The diagnose tools on folders other tools wrote: they agree with the torch model."""

from __future__ import annotations

import pytest
import torch

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


def test_localize_layer_where_the_graph_allows_it(transformers_tiny_llama, genai_tiny_llama):
    from diag.diagnose import localize_layer

    model, folder = transformers_tiny_llama
    ids = torch.tensor([[1, 5, 7, 9]])
    report = localize_layer(model, str(folder), ids)
    # transformers' exporter keeps torch's module scopes: every stage is matched
    assert report.culprit is None
    assert report.table["ok"].all() and len(report.table) == 5
    # genai's builder writes fused operators with no module scopes: said, not guessed
    _, genai = genai_tiny_llama
    with pytest.raises(ValueError, match="no module-scope metadata"):
        localize_layer(model, str(genai), ids)
