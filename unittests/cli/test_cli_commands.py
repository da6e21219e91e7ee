"""The sub-commands on tiny untrained models.

``compare`` (the main job) runs end to end in a subprocess (``python -m diag``); the
other commands run through :func:`diag.cli.main.main` in this process, which spares
the import of torch and transformers per test. The ONNX runs reuse diag's export cache
(one export of tiny:llama for the whole suite).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas
import pytest

from diag.cli.main import main

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


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text.split("(")[0])]


# pinned: the latency report is formatting over the runners, which
# test_cli_runners.py checks on every release
@pytest.mark.pinned
@pytest.mark.parametrize("backend", ["torch", "hf", "onnx"])
def test_generate_prints_latency_report(backend, capsys):
    code = main(
        [
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
            "5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    fields = report_fields(out)
    assert sorted(fields) == sorted(LATENCY_FIELDS), out
    assert fields["batch_size"] == "2"
    inputs, outputs = numbers(fields["input_tokens"]), numbers(fields["output_tokens"])
    assert len(inputs) == 2 and inputs[0] < inputs[1]
    # an untrained model stops on the eos only by chance: at most 5 tokens
    assert len(outputs) == 2 and all(1 <= n <= 5 for n in outputs)
    assert f"(total {sum(outputs)})" in fields["output_tokens"]
    for name in ("encode_latency", "generation_latency", "decode_latency", "total_latency"):
        assert fields[name].endswith(" ms") and float(fields[name].split()[0]) >= 0
    assert float(fields["output_tokens_per_s"].split()[0]) > 0
    assert "----- prompt 2 -----\nHello world, this is a longer prompt" in out


# pinned: --seed and --do-sample reaching the runner (CLI plumbing; seeded sampling is
# compared with model.generate on every release by the generation tests)
@pytest.mark.pinned
def test_generate_sampling_is_seeded(capsys):
    common = ["generate", "--model", "tiny:llama", "--prompt", "Once upon a time"]
    common += ["--max-new-tokens", "6", "--warmup", "0"]
    sampling = [*common, "--do-sample", "--top-k", "20", "--num-return-sequences", "2"]
    runs = []
    for seed in ("3", "3", "4"):
        assert main([*sampling, "--seed", seed]) == 0
        runs.append(capsys.readouterr().out.split("-----\nbatch_size")[0])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert "----- prompt 1, sequence 2 -----" in runs[0]


def test_generate_chat(capsys):
    argv = ["generate", "-m", "tiny:qwen2", "-p", "Hi", "--chat", "-n", "3", "--warmup", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "user: Hi\nassistant: " in out
    # the chat template adds its own tokens around the two-letter prompt
    assert numbers(report_fields(out)["input_tokens"])[0] > 5


def copy_export(result, folder) -> None:
    """Copies the export ``result`` (the .onnx file, its data, its sidecar) into
    ``folder``: ``diag export`` reuses it only when its options give the same key."""
    import shutil

    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(result.filename)
    source = os.path.dirname(result.filename)
    for name in os.listdir(source):
        if name.startswith(base):
            shutil.copy2(os.path.join(source, name), os.path.join(folder, name))


def test_export_writes_model_and_passes(tmp_path, capsys):
    import diag

    # the session's export of tiny:llama (compare's and the bench tests'), copied in:
    # found in the folder only if the command's options give the same key; a fresh
    # export through the command is test_export_without_fusions_at_opset_18's
    model, _ = diag.load_pretrained("tiny:llama")
    out = tmp_path / "exported"
    copy_export(diag.export_causal_lm(model.eval()), out)
    assert main(["export", "--model", "tiny:llama", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reused the export already in the folder" in text
    assert (out / "model.onnx").is_file()
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()
    assert "validation: PASS" in text and "FAIL" not in text
    for name in ("prefill", "decode", "left_padding", "logits", "present.key"):
        assert name in text

    import onnx

    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert [i.name for i in model.graph.input][:2] == ["input_ids", "attention_mask"]
    assert model.graph.output[0].name == "logits"
    # fused by default: the decoder's patterns became the ONNX ops made for them
    ops = {n.op_type for n in model.graph.node}
    assert {"Attention", "RMSNormalization", "RotaryEmbedding"} <= ops


def test_generate_and_export_in_float16(tmp_path, capsys):
    import torch

    import diag

    argv = ["generate", "-m", "tiny:llama", "-p", "Hello", "-n", "4", "--warmup", "0"]
    assert main([*argv, "--backend", "onnx", "--dtype", "float16"]) == 0
    assert "model: tiny:llama (float16), backend: onnx" in capsys.readouterr().out
    # the float16 export generate made (the export cache's), copied in: export --dtype
    # float16 finds it in the folder only when it asks for the same file
    model, _ = diag.load_pretrained("tiny:llama", dtype=torch.float16)
    out = tmp_path / "half"
    copy_export(diag.export_causal_lm(model.eval()), out)
    assert main(["export", "-m", "tiny:llama", "--dtype", "float16", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reused the export already in the folder" in text
    assert "dtype: float16\n" in text and "validation: PASS" in text


# pinned: the command's option reaching export_causal_lm (CLI plumbing; the refusal of
# a bfloat16 file on the CPU is test_dtype.py's)
@pytest.mark.pinned
def test_export_bfloat16_for_cuda_is_not_validated_here(tmp_path, capsys):
    out = tmp_path / "bf16"
    with pytest.warns(UserWarning, match="not validated"):
        code = main(["export", "-m", "tiny:llama", "--dtype", "bfloat16", "--output", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "dtype: bfloat16\n" in text and "validation: not run" in text


# pinned: the command's options reaching export_causal_lm (CLI plumbing; the export at
# opset 18 is test_fusions.py's), one more export of ~8 s
@pytest.mark.pinned
def test_export_without_fusions_at_opset_18(tmp_path, capsys):
    import onnx

    out = tmp_path / "plain"
    argv = ["export", "-m", "tiny:llama", "-o", str(out), "--no-fuse", "--opset", "18"]
    assert main(argv) == 0
    assert "validation: PASS" in capsys.readouterr().out
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert "Attention" not in ops and "RMSNormalization" not in ops and "Softmax" in ops
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    with pytest.raises(SystemExit):
        main(["export", "-m", "tiny:llama", "-o", str(out), "--opset", "12"])
    assert "--opset 12: diag exports with opsets 18 to 23" in capsys.readouterr().err


# pinned: --cache and --max-length reaching export_causal_lm (CLI plumbing; the static
# export itself runs on every release in unittests/export/make/test_static_export.py)
@pytest.mark.pinned
def test_export_static_cache(tmp_path, capsys, static_exports):
    import json

    import onnx

    from unittests.conftest import STATIC_MAX_LENGTH

    # the session's static export of the tiny llama, copied in: the command finds it
    # only if --cache and --max-length reach export_causal_lm (the key covers both)
    _, exported = static_exports("llama")
    out = tmp_path / "static"
    copy_export(exported, out)
    argv = ["export", "-m", "tiny:llama", "-o", str(out), "--cache", "static",
            "--max-length", str(STATIC_MAX_LENGTH)]  # fmt: skip
    assert main([*argv, "--no-verify"]) == 0
    text = capsys.readouterr().out
    assert "reused the export already in the folder" in text and "validation: skipped" in text
    options = json.loads((out / "model.onnx.json").read_text())["key_parts"]["options"]
    assert (options["cache"], options["max_length"]) == ("static", STATIC_MAX_LENGTH)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert "TensorScatter" in {n.op_type for n in model.graph.node}

    # the wrong combinations fail before any model is loaded, naming the flag to pass
    for bad, message in [
        (argv[:-2], "--cache static needs --max-length N"),
        ([*argv[:5], "--max-length", "32"], "--max-length 32 sizes the buffers of a static cache"),
    ]:
        with pytest.raises(SystemExit):
            main(bad)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--cache", "static", "--max-length", "32", "--onnx", str(out)])
    assert "drop one of them" in capsys.readouterr().err


def test_unknown_tiny_architecture_is_a_one_line_error(capsys):
    assert main(["generate", "--model", "tiny:no-such-arch", "--prompt", "x"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diag: error: ")
    assert "no-such-arch" in err
    with pytest.raises(ValueError, match="no-such-arch"):
        main(["generate", "--model", "tiny:no-such-arch", "--prompt", "x", "--debug"])


def test_compare_tiny_llama(tmp_path):
    proc = run_cli(
        "compare", "--model", "tiny:llama", "--max-new-tokens", "8", "--output", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "parity OK" in proc.stdout
    csv = tmp_path / "diag_compare_tiny-llama.csv"
    png = tmp_path / "diag_compare_tiny-llama.png"
    assert f"wrote {csv}" in proc.stdout and f"wrote {png}" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pandas.read_csv(csv)
    assert list(table["backend"]) == ["hf", "torch", "onnx"]
    assert list(table["parity"]) == ["reference", "OK", "OK"]
    # the default prompt, 8 greedy tokens (fewer only if all backends met the eos)
    assert table["new_tokens"].nunique() == 1 and 1 <= table["new_tokens"].iloc[0] <= 8
    assert (table["duration_s"] > 0).all() and (table["tokens_per_s"] > 0).all()
    assert table["max_abs_logit_diff"].iloc[1] == 0.0  # the same torch model, the same kernels
    assert 0 <= table["max_abs_logit_diff"].iloc[2] < 1e-3
    assert "def print_prime(n):" in proc.stdout
    # nothing but the two results: the temporary files were renamed
    assert sorted(os.listdir(tmp_path)) == [csv.name, png.name]


# pinned: --num-beams reaching the three runners (CLI plumbing; beam search itself is
# compared with model.generate on every release by the generation tests)
@pytest.mark.pinned
def test_compare_and_generate_with_beams(tmp_path, capsys):
    argv = ["compare", "-m", "tiny:llama", "-n", "6", "-o", str(tmp_path), "--warmup", "0"]
    assert main([*argv, "--num-beams", "3"]) == 0
    out = capsys.readouterr().out
    assert "beam search (3 beams)" in out and "parity OK" in out
    table = pandas.read_csv(tmp_path / "diag_compare_tiny-llama.csv")
    assert list(table["parity"]) == ["reference", "OK", "OK"]
    argv = ["generate", "-m", "tiny:llama", "-p", "Hello", "-n", "4", "--warmup", "0"]
    argv += ["--num-beams", "3", "--num-return-sequences", "2", "--early-stopping", "never"]
    assert main([*argv, "--backend", "onnx"]) == 0
    onnx_out = capsys.readouterr().out
    assert "----- prompt 1, sequence 2 -----" in onnx_out
    assert main([*argv, "--backend", "hf"]) == 0
    hf_out = capsys.readouterr().out
    # the same two hypotheses, in the same order (after the line naming the backend)
    texts = [out.split("-----\nbatch_size")[0].split("\n", 1)[1] for out in (onnx_out, hf_out)]
    assert texts[0] == texts[1]


def test_compare_with_beams_reports_through_the_diagnosis(tmp_path, capsys):
    """A broken export compared with --num-beams: diagnose's beam report (the step, the
    candidates each side chose, their scores, the verdict), exit code 1."""
    import onnx

    import diag
    from diag.models import load_pretrained
    from diag.testing.perturb import perturb_weight

    model, _ = load_pretrained("tiny:llama", progress=False)
    proto = onnx.load(diag.export_causal_lm(model, verify=False).filename)
    perturb_weight(proto, "layers.1.self_attn.o_proj", scale=0.2)
    broken = str(tmp_path / "broken.onnx")
    onnx.save(proto, broken)
    argv = ["compare", "-m", "tiny:llama", "-n", "6", "-o", str(tmp_path), "--warmup", "0"]
    assert main([*argv, "--onnx", broken, "--num-beams", "3"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # the report is wrapped at spaces
    head = "onnx diverges from torch on prompt 1: first divergence at step 0, beam search of 3"
    assert head in out
    assert ": chosen by torch; score torch " in out and ": chosen by onnx; score torch " in out
    assert "verdict: not rounding" in out and "parity FAILED for onnx" in out
    table = pandas.read_csv(tmp_path / "diag_compare_tiny-llama.csv")
    assert list(table["parity"]) == ["reference", "OK", "FAIL"]


@pytest.mark.slow
def test_compare_smollm2(tmp_path):
    proc = run_cli("compare", "--max-new-tokens", "20", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parity OK" in proc.stdout
    table = pandas.read_csv(tmp_path / "diag_compare_smollm2-135m-instruct.csv")
    assert list(table["parity"]) == ["reference", "OK", "OK"]
    assert (table["new_tokens"] == table["new_tokens"].iloc[0]).all()
    assert table["new_tokens"].iloc[0] >= 1
    assert "def print_prime(n):" in proc.stdout


def test_compare_names_the_divergence_and_fails(tmp_path, capsys, monkeypatch):
    """diag.generate runs a copy of the model with a perturbed output layer: it must
    diverge from model.generate, and compare must say where and exit with 1."""
    import copy

    import torch

    from diag.cli import runners

    original_init = runners.TorchRunner.__init__

    def perturbed_init(self, model):
        model = copy.deepcopy(model)
        head = model.get_output_embeddings()
        with torch.no_grad():
            head.weight.add_(
                torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0))
            )
        original_init(self, model)

    monkeypatch.setattr(runners.TorchRunner, "__init__", perturbed_init)
    argv = ["compare", "-m", "tiny:llama", "-n", "6", "-o", str(tmp_path), "--warmup", "0"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    # the report of diag.diagnose, after the prompt it is about
    match = re.search(r"torch diverges from hf on prompt 1: first divergence at step (\d+)", out)
    assert match, out
    step = int(match.group(1))
    assert 0 <= step < 6
    # the report's long lines are wrapped, continued 4 spaces deeper: joined back here
    lines = re.sub(r"\n      (?=\S)", " ", out).splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("torch diverges"))
    chose = {line.split()[0]: line for line in lines[index + 1 : index + 3]}
    tops = {line.split()[0]: line for line in lines[index + 4 : index + 6]}
    assert sorted(chose) == sorted(tops) == ["hf", "torch"], out
    # each side chose its own best candidate
    for name in ("hf", "torch"):
        assert "margin over its 2nd" in chose[name] and " top: " in tops[name]
        chosen = re.search(r"chose (\d+) ", chose[name]).group(1)
        first = re.search(r" top: (\d+) '", tops[name]).group(1)
        assert chosen == first
    # a perturbed output layer is far beyond rounding
    assert "verdict: not rounding" in out or "verdict: not a near tie" in out
    assert "parity FAILED for torch" in out
    table = pandas.read_csv(tmp_path / "diag_compare_tiny-llama.csv")
    assert list(table["parity"]) == ["reference", "FAIL", "OK"]
    assert table["max_abs_logit_diff"].iloc[1] > 0.1


def test_compare_bfloat16_gives_the_export_and_the_dtype_verdicts(tmp_path):
    proc = run_cli(
        "compare", "--model", "tiny:llama", "--max-new-tokens", "12", "--dtype", "bfloat16",
        "--output", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the CPU provider has no bfloat16 kernels: one line says the export runs float32
    assert "exported as float32" in proc.stderr and "dtype='bfloat16'" in proc.stderr
    assert "dtype: bfloat16, the three backends in float32" in proc.stdout
    assert "parity OK" in proc.stdout  # the export's fidelity, in float32
    # the dtype's own verdict: the same tokens or a departure with its margins
    assert "----- the model's dtype (bfloat16) against float32, model.generate -----" in proc.stdout
    line = proc.stdout.split("against float32, model.generate -----\n")[1].splitlines()[0]
    assert line.startswith("prompt 1: bfloat16 ")
    assert "generates float32's" in line or "departs from float32: first divergence" in line


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_compare_smollm2_in_reduced_precision(tmp_path, dtype):
    """SmolLM2 loaded in float16 runs its float16 export; in bfloat16, a float32 one.
    Either way the export generates what torch does in its dtype, and the report says
    where the dtype itself first changes a token against float32."""
    proc = run_cli(
        "compare", "--max-new-tokens", "20", "--dtype", dtype, "--output", str(tmp_path)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parity OK" in proc.stdout
    runs_in = "float16" if dtype == "float16" else "float32"
    assert f"dtype: {dtype}" in proc.stdout and f"the three backends in {runs_in}" in proc.stdout
    assert f"----- the model's dtype ({dtype}) against float32" in proc.stdout
