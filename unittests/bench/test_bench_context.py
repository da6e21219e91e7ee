"""bench/bench_context.py's own functions on real measurements of a tiny model: the
prompts, the cache size, the table, the target ratios, the plot, the peak memory."""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"

# pinned: the bench script's measuring and formatting over diag's public API, which the
# unit tests check on every release (its tiny export costs ~10 s a phase)
pytestmark = pytest.mark.pinned


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_context", BENCH / "bench_context.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    import diag

    model, tokenizer = diag.load_pretrained("tiny:llama")
    model = model.eval()
    return model, tokenizer, diag.export_causal_lm(model, verify=False).filename


def test_context_ids_rows_differ_and_repeat_the_text(bench):
    text = [5, 6, 7, 8, 9]
    ids = bench.context_ids(text, 12, 3, shift=2)
    assert ids.shape == (3, 12) and ids.dtype == torch.int64
    stream = text * 4
    for r in range(3):
        assert ids[r].tolist() == stream[2 * r : 2 * r + 12]
    assert not torch.equal(ids[0], ids[1])
    with pytest.raises(ValueError, match="at least one token"):
        bench.context_ids([], 4, 1, 1)


def test_cache_mib_is_what_a_prefill_returns(bench, tiny):
    from diag.generation import open_steps

    model, _, path = tiny
    backend = open_steps(path).backend
    ids = torch.arange(3, 3 + 2 * 37).reshape(2, 37)
    _, past = backend.prefill(ids, torch.ones_like(ids), torch.arange(37).expand(2, 37))
    nbytes = sum(v.numpy().nbytes for v in past)
    assert bench.cache_mib(model.config, 2, 37) == pytest.approx(nbytes / 2**20)


def test_table_and_ratios_of_real_runs(bench, tiny, tmp_path):
    model, tokenizer, path = tiny
    run = bench.make_runner("onnx_generate", path, 1)
    text = tokenizer("\n".join(["def f(x):", "return x"]))["input_ids"]
    records = []
    for _ in range(3):
        for length in (8, 32):
            ids = bench.context_ids(text, length, 1, 3)
            tokens, prefill, decode = run(ids, 5)
            assert len(tokens) == 5
            records.append(
                {"contender": "onnx_generate", "batch": 1, "length": length, "new_tokens": 5,
                 "prefill_s": prefill, "decode_s": decode, "peak_mib": bench.peak_mib(),
                 "same_tokens": True}
            )  # fmt: skip
    table = bench.summarize(records)
    assert list(table.length) == [8, 32] and list(table.rounds) == [3, 3]
    for length in (8, 32):
        mine = [r for r in records if r["length"] == length]
        decode = [1e3 * r["decode_s"] / 4 for r in mine]
        prefill = [1e3 * r["prefill_s"] for r in mine]
        row = table[table.length == length].iloc[0]
        assert row["decode_ms/step"] == pytest.approx(statistics.median(decode))
        assert row["prefill_ms"] == pytest.approx(statistics.median(prefill))
        assert row["decode_spread"] == pytest.approx(
            (max(decode) - min(decode)) / statistics.median(decode)
        )
        assert row["peak_MiB"] == mine[0]["peak_mib"]

    ratios = bench.target_ratios(table)
    step = table.set_index("length")["decode_ms/step"]
    (growth, genai, prefill) = ratios.values()
    assert growth == pytest.approx(step[8] / step[32])
    # genai and model.generate were not measured, nor the 1637-token prompt
    assert math.isnan(genai) and math.isnan(prefill)

    # the bandwidth bound: the weights once and the cache at the mean decode position
    from diag.helpers.bandwidth import decode_weight_bytes

    weights = decode_weight_bytes(model)
    bound = bench.add_bandwidth_bound(table, model.config, weights, 5, gb_per_s=10.0)
    for length in (8, 32):
        row = bound[bound.length == length].iloc[0]
        step_bytes = weights + bench.cache_mib(model.config, 1, length + 2.5) * 2**20
        assert row["step_MiB"] == pytest.approx(step_bytes / 2**20)
        assert row["bound_ms"] == pytest.approx(step_bytes / 10e9 * 1e3)
        assert row["%_of_bound"] == pytest.approx(100 * row["bound_ms"] / row["decode_ms/step"])
    assert "step_MiB" not in table  # a new table, the measured one unchanged

    png = bench.save_plot(table, str(tmp_path / "context.png"))
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3
    assert os.listdir(tmp_path) == ["context.png"]  # no temporary file left


def test_peak_memory_sees_native_allocations(bench):
    import mmap

    bench.reset_peak()
    before = bench.peak_mib()
    # 64 MiB of fresh pages, outside Python's allocator (malloc could reuse pages
    # already resident from earlier tests)
    buffer = mmap.mmap(-1, 64 * 2**20)
    np.frombuffer(buffer, dtype=np.uint8)[:] = 1
    assert bench.peak_mib() - before > 60
    buffer.close()
    bench.reset_peak()
    assert bench.peak_mib() < before + 60


def test_static_column_follows_the_signature(bench):
    import inspect

    from diag.export import export_causal_lm

    has_cache = "cache" in inspect.signature(export_causal_lm).parameters
    assert (bench.static_export_reason() is None) == has_cache
