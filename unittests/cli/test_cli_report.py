"""The pieces the commands print with: latency report, parity, atomic writes."""

from __future__ import annotations

import pytest
import torch

from diag.cli.backends import Generation, cut_after_eos
from diag.cli.parity import find_divergence, first_divergent_step, max_logit_diff
from diag.cli.report import LatencyReport, slug


def test_latency_report_figures():
    report = LatencyReport(
        batch_size=2,
        input_tokens=[5, 7],
        output_tokens=[10, 6],
        encode_seconds=0.004,
        generation_seconds=0.79,
        decode_seconds=0.006,
    )
    assert report.total_seconds == pytest.approx(0.8)
    assert report.ms_per_output_token == pytest.approx(50.0)
    assert report.output_tokens_per_second == pytest.approx(20.0)
    lines = dict(line.split(None, 1) for line in report.format().splitlines())
    assert lines["input_tokens"] == "[5, 7] (total 12)"
    assert lines["total_latency"] == "800.00 ms"
    assert lines["output_tokens_per_s"] == "20.00 tokens/s"
    assert report.as_dict()["total_output_tokens"] == 16


def test_cut_after_eos_and_divergent_step():
    assert cut_after_eos([4, 2, 9, 2], [2, 7]) == [4, 2]
    assert cut_after_eos([4, 5, 6], [2], length=2) == [4, 5]
    assert first_divergent_step([1, 2, 3], [1, 2, 3]) is None
    assert first_divergent_step([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergent_step([1, 2, 2], [1, 2]) == 2


class _Tok:
    def decode(self, ids):
        return f"t{ids[0]}"


def test_find_divergence_reports_both_sides():
    ref_logits = [torch.tensor([[0.0, 3.0, 1.0, 2.9]]), torch.tensor([[5.0, 0.0, 0.0, 0.0]])]
    other_logits = [torch.tensor([[0.0, 3.0, 1.0, 2.9]]), torch.tensor([[0.0, 0.0, 0.0, 6.0]])]
    ref = Generation("hf", [[1, 0]], 0.1, ref_logits)
    other = Generation("onnx", [[1, 3]], 0.1, other_logits)
    div = find_divergence(ref, other, _Tok(), prompt_index=2, k=2)
    assert (div.step, div.reference_token, div.backend_token) == (1, 0, 3)
    assert div.reference_top[0].token_id == 0 and len(div.reference_top) == 2
    assert div.backend_top[0].token_id == 3 and div.backend_top[0].logit == 6.0
    assert div.reference_margin == pytest.approx(5.0)
    text = div.format()
    assert "onnx diverges from hf on prompt 3 at step 1" in text and "'t3' (3) 6.0000" in text
    assert max_logit_diff(ref, other, steps=2) == pytest.approx(6.0)
    assert max_logit_diff(ref, other, steps=1) == 0.0
    assert find_divergence(ref, ref, _Tok()) is None


def test_slug():
    assert slug("tiny:llama") == "tiny-llama"
    assert slug("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB-SmolLM2-135M"
    assert slug("./models/mine/") == "mine"
