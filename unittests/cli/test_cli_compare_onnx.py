"""``diag compare --onnx PATH``: another tool's file against the torch model."""

from __future__ import annotations

from diag.cli.main import main


def test_compare_onnx_genai_folder(genai_tiny_llama, tmp_path, capsys):
    # tiny:llama is the model the fixture's folder was built from (seeded weights)
    _, folder = genai_tiny_llama
    code = main(
        ["compare", "--model", "tiny:llama", "--onnx", str(folder), "--max-new-tokens", "5",
         "--warmup", "0", "-o", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "parity OK" in out
    assert (tmp_path / "diag_compare_tiny-llama.csv").exists()
    assert (tmp_path / "diag_compare_tiny-llama.png").exists()
