"""python -m diag compare --record FILE / --against FILE on the tiny llama."""

from __future__ import annotations

import json

import pytest

from diag.cli.main import main

ARGS = ["compare", "--model", "tiny:llama", "--max-new-tokens", "4", "--prompt", "def f(x):",
        "--warmup", "0"]  # fmt: skip


# pinned: compare --record / --against is CLI plumbing over diag.testing's records
# (test_records.py runs on every release)
@pytest.mark.pinned
def test_record_then_against(tmp_path, capsys):
    path = tmp_path / "golden.json"
    assert main([*ARGS, "--output", str(tmp_path), "--record", str(path)]) == 0
    content = json.loads(path.read_text())
    assert content["batched"] is False and content["decoding"]["max_new_tokens"] == 4
    capsys.readouterr()
    assert main([*ARGS, "--output", str(tmp_path), "--against", str(path)]) == 0
    out = capsys.readouterr().out
    for name in ("hf", "torch", "onnx"):
        assert f"{name} matches the record" in out

    content["rows"][0]["tokens"][1] += 1
    path.write_text(json.dumps(content))
    assert main([*ARGS, "--output", str(tmp_path), "--against", str(path)]) == 1
    out = capsys.readouterr().out
    assert "onnx (diag.onnx_generate) no longer matches the record" in out
    assert "the tokens changed at step 1" in out
    assert "record check FAILED" in out


def test_against_a_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*ARGS, "--output", str(tmp_path), "--against", str(tmp_path / "none.json")])
    assert "no such file" in capsys.readouterr().err


# pinned: the CLI's argument check over a file, no model involved
@pytest.mark.pinned
def test_against_a_file_that_is_not_a_record_is_refused_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a record")
    with pytest.raises(SystemExit):
        main([*ARGS, "--output", str(tmp_path), "--against", str(path)])
    out = capsys.readouterr()
    assert "--against: " in out.err and "is not a usable diag record: it is not JSON" in out.err
    assert out.out == ""  # nothing generated before the refusal
