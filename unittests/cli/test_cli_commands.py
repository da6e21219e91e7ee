"""The sub-commands, run in a subprocess (``python -m diag ...``) on tiny untrained models.

The ONNX exports go through diag's export cache, so the ONNX tests after the first one
reuse the export of tiny:llama.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATENCY_FIELDS = [
    "batch_size",
    "input_tokens",
    "output_tokens",
    "encode_latency",
    "generation_latency",
    "decode_latency",
    "total_latency",
    "ms_per_output_token",
    "output_tokens_per_s",
]


def run_cli(*args: str, cwd: str = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run(
        [sys.executable, "-m", "diag", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def report_fields(stdout: str) -> dict[str, str]:
    fields = {}
    for line in stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in LATENCY_FIELDS:
            fields[parts[0]] = parts[1]
    return fields


@pytest.mark.parametrize("backend", ["torch", "hf", "onnx"])
def test_generate_prints_latency_report(backend):
    proc = run_cli(
        "generate",
        "--model",
        "tiny:llama",
        "--backend",
        backend,
        "--prompt",
        "def f(x):",
        "--prompt",
        "Hello world, this is a longer prompt",
        "--max-new-tokens",
        "6",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    fields = report_fields(proc.stdout)
    assert sorted(fields) == sorted(LATENCY_FIELDS), proc.stdout
    assert fields["batch_size"] == "2"
    # two prompts of different lengths, 6 new tokens each (an untrained model never
    # stops early on the eos, or only by chance: at most 6)
    inputs = [int(n) for n in re.findall(r"\d+", fields["input_tokens"].split("(")[0])]
    assert len(inputs) == 2 and inputs[0] < inputs[1]
    outputs = [int(n) for n in re.findall(r"\d+", fields["output_tokens"].split("(")[0])]
    assert len(outputs) == 2 and all(1 <= n <= 6 for n in outputs)
    assert f"(total {sum(outputs)})" in fields["output_tokens"]
    assert float(fields["output_tokens_per_s"].split()[0]) > 0
    assert "def f(x):" in proc.stdout and "----- prompt 2 -----" in proc.stdout


def test_generate_sampling_is_seeded():
    args = [
        "generate",
        "--model",
        "tiny:llama",
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "8",
        "--do-sample",
        "--top-k",
        "20",
        "--num-return-sequences",
        "2",
        "--warmup",
        "0",
    ]
    first, second = run_cli(*args, "--seed", "3"), run_cli(*args, "--seed", "3")
    assert first.returncode == 0, first.stderr
    texts = [p.stdout.split("-----\nbatch_size")[0] for p in (first, second)]
    assert texts[0] == texts[1]
    assert report_fields(first.stdout)["batch_size"] == "2"
    assert "----- prompt 1, sequence 2 -----" in first.stdout


def test_export_writes_model_and_passes(tmp_path):
    out = tmp_path / "exported"
    proc = run_cli("export", "--model", "tiny:llama", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.onnx").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()
    assert "PASS" in proc.stdout and "FAIL" not in proc.stdout
    assert "logits" in proc.stdout

    import onnx

    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert [i.name for i in model.graph.input][:2] == ["input_ids", "attention_mask"]
    assert model.graph.output[0].name == "logits"


def test_compare_tiny_llama(tmp_path):
    proc = run_cli(
        "compare", "--model", "tiny:llama", "--max-new-tokens", "8", "--output", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parity OK" in proc.stdout
    csv = tmp_path / "diag_compare_tiny-llama.csv"
    png = tmp_path / "diag_compare_tiny-llama.png"
    assert f"wrote {csv}" in proc.stdout and f"wrote {png}" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pandas.read_csv(csv)
    assert list(table["backend"]) == ["hf", "torch", "onnx"]
    assert list(table["parity"]) == ["reference", "OK", "OK"]
    # one default prompt, 8 greedy tokens each (an untrained model may hit eos earlier,
    # but then all three backends do at the same step)
    assert table["new_tokens"].nunique() == 1 and 1 <= table["new_tokens"].iloc[0] <= 8
    assert (table["duration_s"] > 0).all() and (table["tokens_per_s"] > 0).all()
    assert table["max_abs_logit_diff"].iloc[1] < 1e-3 and table["max_abs_logit_diff"].iloc[2] < 1e-2
    # nothing but the two results: the files were renamed from temporary ones
    assert sorted(os.listdir(tmp_path)) == [csv.name, png.name]


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--model", "./no/such/model", "--prompt", "x"],
        ["compare", "--model", "/nonexistent/model/folder", "--max-new-tokens", "2"],
        ["export", "--model", "./missing-model-dir", "--output", "out"],
        ["generate", "--model", "tiny:no-such-arch", "--prompt", "x"],
    ],
)
def test_missing_model_gives_one_line_error(argv, tmp_path):
    proc = run_cli(*argv, cwd=str(tmp_path))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("diag: error:")]
    assert len(errors) == 1, proc.stderr
    assert argv[2].lstrip("./") in errors[0] or "no-such-arch" in errors[0]
    assert not os.path.exists(tmp_path / "out")


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli(
        "generate", "--model", "./no/such/model", "--prompt", "x", "--debug", cwd=str(tmp_path)
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


@pytest.mark.slow
def test_compare_smollm2(tmp_path):
    proc = run_cli("compare", "--max-new-tokens", "20", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parity OK" in proc.stdout
    table = pandas.read_csv(tmp_path / "diag_compare_smollm2-135m-instruct.csv")
    assert list(table["parity"]) == ["reference", "OK", "OK"]
    assert (table["new_tokens"] == table["new_tokens"].iloc[0]).all()
    # the default prompt asks for code: SmolLM2 writes some
    assert "def print_prime(n):" in proc.stdout
