"""inspect_onnx / diag inspect: the layout, the operators, the weights, and why not."""

from __future__ import annotations

import onnx
import pytest

from diag.cli.main import main
from diag.contract.inspection import inspect_onnx, quantized_bits


def test_inspect_genai_folder(genai_tiny_llama):
    _, folder = genai_tiny_llama
    report = inspect_onnx(folder)
    assert report.drivable
    assert report.layout.name == "onnxruntime-genai"
    assert report.graphs["model.onnx"][0] == "2 x GroupQueryAttention (the attention)"
    # the tiny llama: 49152 x 128 embedding and lm head, float32, and a little more
    assert 2 * 49152 * 128 * 4 < report.weight_bytes < 3 * 49152 * 128 * 4
    text = str(report)
    assert "layout onnxruntime-genai: one graph" in text and "drivable: yes" in text


def test_inspect_transformers_folder(transformers_tiny_llama):
    _, folder = transformers_tiny_llama
    report = inspect_onnx(folder)
    assert report.drivable and report.layout.is_pair
    assert set(report.graphs) == {"prefill.onnx", "decode.onnx"}
    assert report.graphs["decode.onnx"][0].startswith("no attention operator")


def test_inspect_says_why_not(genai_tiny_llama, tmp_path, capsys):
    # the genai graph without its config: one line for the 4 cache inputs
    _, folder = genai_tiny_llama
    alone = tmp_path / "model.onnx"
    onnx.save(onnx.load(folder / "model.onnx", load_external_data=False), alone)
    report = inspect_onnx(alone)
    assert not report.drivable
    assert len(report.problems) == 1
    assert "(4 tensors)" in report.problems[0] and "head_dim" in report.problems[0]
    assert main(["inspect", str(alone)]) == 1
    assert "drivable: no" in capsys.readouterr().out
    # the layout completed on the command line
    assert main(["inspect", str(alone), "--head-dim", "16", "--kv-heads", "4"]) == 0
    assert "drivable: yes" in capsys.readouterr().out


@pytest.mark.parametrize("bits", [4])
def test_quantized_matmuls_are_reported(bigram_lm, tmp_path, bits):
    # a MatMulNBits node added to a graph: counted with its bits and block size
    model, _ = bigram_lm()
    node = onnx.helper.make_node(
        "MatMulNBits", ["E", "E", "E"], ["unused"], domain="com.microsoft",
        K=16, N=16, bits=bits, block_size=32,
    )  # fmt: skip
    model.graph.node.append(node)
    path = tmp_path / "q.onnx"
    onnx.save(model, path)
    report = inspect_onnx(path)
    assert f"1 x MatMulNBits ({bits} bits, block 32: 1)" in report.graphs["q.onnx"]
    # the bits a divergence verdict reads, from the file, its folder or the graph
    assert quantized_bits(path) == quantized_bits(tmp_path) == quantized_bits(model) == bits


def test_float_and_unreadable_graphs_have_no_bits(bigram_lm, tmp_path):
    model, _ = bigram_lm()
    assert quantized_bits(model) is None
    assert quantized_bits(tmp_path / "missing.onnx") is None and quantized_bits(42) is None
    # the int8 operators carry no bits attribute: 8
    model.graph.node.append(
        onnx.helper.make_node("MatMulInteger", ["E", "E"], ["unused"], domain="")
    )
    assert quantized_bits(model) == 8
