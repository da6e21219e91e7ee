"""The pieces the commands print with: latency report, eos cut, file names."""

from __future__ import annotations

import pytest

from diag.cli.report import LatencyReport, slug
from diag.cli.runners import cut_after_eos


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


def test_cut_after_eos():
    assert cut_after_eos([4, 2, 9, 2], [2, 7]) == [4, 2]
    assert cut_after_eos([4, 5, 6], [2], length=2) == [4, 5]


def test_slug():
    assert slug("tiny:llama") == "tiny-llama"
    assert slug("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB-SmolLM2-135M"
    assert slug("./models/mine/") == "mine"
