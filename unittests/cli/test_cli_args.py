"""The command line's parser: --help of every command, one-line errors for bad values,
no torch import to print the help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from diag.cli.args import DECODING_OPTIONS, DTYPE_CHOICES, given_decoding_options
from diag.cli.main import COMMANDS, build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diag", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command):
    args = ["--help"] if command is None else [command, "--help"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: diag")
    assert "Traceback" not in proc.stderr
    if command is None:
        for name in COMMANDS:
            assert name in proc.stdout
    else:
        if command not in ("versions", "inspect"):  # the commands without a torch model
            assert "--model" in proc.stdout
        assert "--debug" in proc.stdout
    if command == "generate":
        for option in ("--prompt", "--backend", "--chat", "--top-p", "--seed"):
            assert option in proc.stdout
    if command == "compare":
        assert "--max-new-tokens" in proc.stdout and "--output" in proc.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from diag.cli.main import main\n"
        "for argv in (['--help'], ['compare', '--help'], ['generate', '--help'],\n"
        "             ['versions'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'pandas')"
        " if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--prompt", "x", "--top-p", "2"], "argument --top-p: must be in (0, 1]"),
        (
            ["generate", "--prompt", "x", "--temperature", "0"],
            "argument --temperature: must be > 0",
        ),
        (
            ["generate", "--prompt", "x", "--max-new-tokens", "0"],
            "--max-new-tokens/-n: must be >= 1",
        ),
        (["generate", "--prompt", "x", "--top-k", "-1"], "--top-k: must be >= 0"),
        (["generate", "--prompt", "x", "--top-k", "many"], "expects an integer, got 'many'"),
        (["generate", "--prompt", "x", "--repetition-penalty", "nan"], "expects a finite number"),
        (["generate", "--prompt", "x", "--backend", "tf"], "argument --backend/-b: invalid choice"),
        (
            ["generate", "--prompt", "x", "--num-return-sequences", "2", "--no-do-sample"],
            "needs --do-sample",
        ),
        (
            ["generate", "-p", "x", "--num-return-sequences", "3", "--num-beams", "2"],
            "is more than --num-beams 2",
        ),
        (["generate", "-p", "x", "--early-stopping", "soon"], "expects true, false or never"),
        (["compare", "--num-beams", "2", "--record", "r.json"], "hold greedy generations"),
        (["generate"], "give at least one prompt"),
        (["compare", "--prompt", ""], "--prompt/-p: must not be empty"),
        (["compare", "--max-new-tokens", "-3"], "--max-new-tokens/-n: must be >= 1"),
        (["export"], "the following arguments are required: --output"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_give_one_line(argv, message):
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("diag: error: ")
    assert message in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--model", "./no/such/model", "--prompt", "x"],
        ["compare", "--model", "/nonexistent/model/folder", "--max-new-tokens", "2"],
        ["export", "--model", "~/missing-model-dir", "--output", "out"],
    ],
)
def test_missing_model_folder_gives_one_line_error(argv, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "diag", *argv],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"diag: error: model folder {argv[2]!r} does not exist")
    # nothing written, not even the export folder
    assert os.listdir(tmp_path) == []


# bad files named by --onnx / inspect PATH: (what is written in the folder, argv, exit
# code, message); the reader's words (diag.contract.files), before any model is loaded
BAD_PATHS = {
    "--onnx missing": ({}, ["compare", "-m", "tiny:llama", "--onnx", "none.onnx"], 2, "--onnx 'none.onnx': ONNX model 'none.onnx' does not exist"),
    "--onnx truncated": ({"t.onnx": b"\x08\x07\x12"}, ["compare", "-m", "tiny:llama", "--onnx", "t.onnx"], 2, "--onnx 't.onnx': 't.onnx' is not an ONNX model (truncated"),
    "--onnx empty file": ({"e.onnx": b""}, ["compare", "-m", "tiny:llama", "--onnx", "e.onnx"], 2, "'e.onnx' is empty (0 bytes), not an ONNX model"),
    "--onnx folder of no tool": ({"d/a.txt": b"x"}, ["compare", "-m", "tiny:llama", "--onnx", "d"], 2, "no decoder layout found in the folder 'd'"),
    "--onnx genai config not JSON": ({"g/genai_config.json": b"{", "g/model.onnx": b""}, ["compare", "-m", "tiny:llama", "--onnx", "g"], 2, "onnxruntime-genai's config 'g/genai_config.json' is not valid JSON"),
    "inspect missing": ({}, ["inspect", "none.onnx"], 3, "ONNX model 'none.onnx' does not exist"),
}  # fmt: skip


# pinned: CLI plumbing over the file checks of diag.contract.files
@pytest.mark.pinned
@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_a_bad_onnx_path_is_one_line_naming_the_file(case, tmp_path, monkeypatch, capsys):
    from diag.cli.main import main

    files, argv, code, message = BAD_PATHS[case]
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    try:  # in-process: argparse's errors exit, the others return their code
        returned = main(argv)
    except SystemExit as exit:
        returned = exit.code
    err = capsys.readouterr().err
    assert returned == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diag: error: "), err
    assert message in lines[0], lines[0]


# pinned: CLI plumbing over the file checks of diag.contract.files
@pytest.mark.pinned
def test_inspect_says_why_a_truncated_file_is_not_drivable(tmp_path, capsys):
    from diag.cli.main import main

    (tmp_path / "t.onnx").write_bytes(b"\x08\x07\x12")
    assert main(["inspect", str(tmp_path / "t.onnx")]) == 1
    out = capsys.readouterr().out
    assert "drivable: no" in out and "is not an ONNX model (truncated" in out


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("generate", "--model", "./no/such/model", "--prompt", "x", "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_parser_defaults():
    args = build_parser().parse_args(["compare"])
    assert args.model == "smollm2-135m-instruct"
    assert args.max_new_tokens == 100
    assert args.output == "."
    assert args.prompts is None and args.default_prompts == ["def print_prime(n):"]
    args = build_parser().parse_args(
        ["generate", "-p", "a", "-p", "b", "--do-sample", "--top-k", "7", "--top-p", "0.5"]
    )
    assert (args.prompts, args.do_sample, args.top_k, args.top_p) == (["a", "b"], True, 7, 0.5)
    assert args.backend == "torch" and args.temperature is None


@pytest.mark.parametrize("command", ["compare", "export", "generate"])
def test_dtype_choices_are_the_one_list(command):
    parser = build_parser()
    required = {"export": ["--output", "out"], "generate": ["-p", "a"]}.get(command, [])
    assert parser.parse_args([command, *required]).dtype == "auto"
    for choice in DTYPE_CHOICES:
        assert parser.parse_args([command, *required, "--dtype", choice]).dtype == choice
    proc = run_cli(command, *required, "--dtype", "int8")
    assert proc.returncode == 2 and "argument --dtype: invalid choice: 'int8'" in proc.stderr
    assert "'float32', 'float16', 'bfloat16'" in proc.stderr


def test_only_the_decoding_options_given_are_passed():
    parser = build_parser()
    args = parser.parse_args(["generate", "-p", "a"])
    # not given: left to the model's generation config
    assert given_decoding_options(args) == {}
    args = parser.parse_args(["generate", "-p", "a", "--top-k", "0", "--no-do-sample"])
    assert given_decoding_options(args) == {"top_k": 0, "do_sample": False}
    argv = ["generate", "-p", "a", "--do-sample", "--temperature", "0.5", "--top-p", "0.9"]
    argv += ["--repetition-penalty", "1.2", "--num-return-sequences", "3"]
    argv += ["--num-beams", "4", "--length-penalty", "-0.5", "--early-stopping", "never"]
    given = given_decoding_options(parser.parse_args(argv))
    assert given == {
        "do_sample": True,
        "temperature": 0.5,
        "top_p": 0.9,
        "repetition_penalty": 1.2,
        "num_return_sequences": 3,
        "num_beams": 4,
        "length_penalty": -0.5,
        "early_stopping": "never",
    }
    assert sorted(given) == sorted(set(DECODING_OPTIONS) - {"top_k"})
    # every option of the command line is a DecodingOptions field
    from diag.generation.options import option_fields

    assert set(DECODING_OPTIONS) <= set(option_fields())
