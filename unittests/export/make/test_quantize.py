"""Quantized exports: each option of QuantizeOptions gives the operators it should, the
options travel in the key, the metadata and the sidecar, the validation says it is a
quantized file; SmolLM2 int4 and int8 (slow)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from diag import contract
from diag.export import ExportValidationError, QuantizeOptions, export_causal_lm
from diag.export.check.tolerance import QUANTIZED_RTOL
from diag.export.check.validate import validate_causal_lm
from diag.export.make.quantize import count_ops, lm_head_node, quantize_model
from diag.export.record.export_cache import read_sidecar
from diag.models import get_untrained_model_with_inputs

# pinned: quantization rewrites the ONNX graph of an export (ONNX / ONNX Runtime logic),
# which every release checks on each architecture; the module's own float and int4
# exports of a tied llama cost ~25 s a phase
pytestmark = pytest.mark.pinned

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny llama with a tied lm_head (read by Gemm, as SmolLM2's), its float export
    in a private cache, and its int4 export made from it."""
    cache = tmp_path_factory.mktemp("quant-cache")
    old = os.environ.get("DIAG_CACHE")
    os.environ["DIAG_CACHE"] = str(cache)
    try:
        model = get_untrained_model_with_inputs("llama")["model"]
        model.config.tie_word_embeddings = True
        model.tie_weights()
        float_export = export_causal_lm(model, verify=False)
        int4 = export_causal_lm(model, quantize="int4")
        yield model, float_export, int4
    finally:
        if old is None:
            os.environ.pop("DIAG_CACHE", None)
        else:
            os.environ["DIAG_CACHE"] = old


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _quantized(float_export, options: QuantizeOptions) -> onnx.ModelProto:
    return quantize_model(onnx.load(float_export.filename), options)


def _weight_matmuls(proto: onnx.ModelProto) -> int:
    inits = {i.name for i in proto.graph.initializer}
    return sum(
        1 for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits
    )


def test_tied_head_is_a_gemm_before(tiny):
    _, float_export, _ = tiny
    proto = onnx.load(float_export.filename)
    head = lm_head_node(proto)
    assert head.op_type == "Gemm" and _attrs(head)["transB"] == 1


@pytest.mark.parametrize(
    "options",
    [
        QuantizeOptions(),
        QuantizeOptions(bits=8),
        QuantizeOptions(block_size=16, symmetric=False, accuracy_level=None),
        QuantizeOptions(bits=4, block_size=64, accuracy_level=1),
    ],
    ids=lambda o: o.name,
)
def test_every_weight_matmul_becomes_matmulnbits(tiny, options):
    _, float_export, _ = tiny
    before = _weight_matmuls(onnx.load(float_export.filename))
    proto = _quantized(float_export, options)
    nbits = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
    # the lm_head included: its tied Gemm became a MatMul, then a MatMulNBits
    assert len(nbits) == before and _weight_matmuls(proto) == 0
    for node in nbits:
        attrs = _attrs(node)
        assert attrs["bits"] == options.bits and attrs["block_size"] == options.block_size
        assert attrs.get("accuracy_level", 0) == (options.accuracy_level or 0)
        # A, B, scales, and the zero points when not symmetric
        assert len(node.input) == (3 if options.symmetric else 4)
    head = lm_head_node(proto)
    assert head.op_type == "MatMulNBits" and _attrs(head)["N"] == tiny[0].config.vocab_size
    assert {p.key: p.value for p in proto.metadata_props}[
        contract.QUANTIZATION_METADATA
    ] == options.to_json()


def test_lm_head_excluded_and_embedding_included(tiny):
    _, float_export, _ = tiny
    vocab = tiny[0].config.vocab_size
    no_head = _quantized(float_export, QuantizeOptions(lm_head=False))
    head = lm_head_node(no_head)
    assert head.op_type == "Gemm"  # left as the exporter wrote it, float
    assert count_ops(no_head)["MatMulNBits"] == _weight_matmuls(onnx.load(float_export.filename)) - 1
    assert all(_attrs(n)["N"] != vocab for n in no_head.graph.node if n.op_type == "MatMulNBits")
    assert "GatherBlockQuantized" not in count_ops(no_head)

    gathers = count_ops(onnx.load(float_export.filename))["Gather"]
    with_embedding = _quantized(float_export, QuantizeOptions(embedding=True))
    ops = count_ops(with_embedding)
    assert ops["GatherBlockQuantized"] == 1 and ops.get("Gather", 0) == gathers - 1
    gather = next(n for n in with_embedding.graph.node if n.op_type == "GatherBlockQuantized")
    assert _attrs(gather)["block_size"] == 32 and _attrs(gather)["quantize_axis"] == 1


def _tied_graph(vocab: int, hidden: int) -> onnx.ModelProto:
    """``emb = Gather(E, ids)``, ``logits = Gemm(x, E, transB=1)``: a tied table, as the
    exporter writes SmolLM2's."""
    from onnx import TensorProto, helper

    table = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("Gemm", ["x", "E"], ["logits"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [vocab]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [hidden, hidden])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [vocab, hidden]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, [hidden, vocab])],
        [onnx.numpy_helper.from_array(table, "E")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize(
    "options",
    [
        QuantizeOptions(embedding=True, accuracy_level=None),
        QuantizeOptions(embedding=True, symmetric=False, accuracy_level=None),
        QuantizeOptions(bits=8, embedding=True, block_size=16, accuracy_level=None),
        QuantizeOptions(embedding=True, lm_head_bits=8, symmetric=False, accuracy_level=None),
    ],
    ids=lambda o: o.name,
)
def test_tied_embedding_reads_the_head_table(options):
    # 96 = 3 blocks of 32: an odd number of packed zero points per row
    vocab, hidden = 80, 96
    proto = quantize_model(_tied_graph(vocab, hidden), options)
    assert count_ops(proto) == {"MatMulNBits": 1, "GatherBlockQuantized": 1, "Reshape": 1}
    # one table: the float one is gone, the embedding reads the head's bytes
    assert "E" not in {i.name for i in proto.graph.initializer}
    head = lm_head_node(proto)
    gather = next(n for n in proto.graph.node if n.op_type == "GatherBlockQuantized")
    reshape = next(n for n in proto.graph.node if n.op_type == "Reshape")
    assert reshape.input[0] == head.input[1] and gather.input[0] == reshape.output[0]
    assert list(gather.input[2:]) == list(head.input[2:])
    bits = options.lm_head_bits or options.bits
    assert _attrs(gather)["bits"] == _attrs(head)["bits"] == bits
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    # x = identity: the logits are the dequantized table, transposed
    emb, logits = session.run(
        None, {"ids": np.arange(vocab), "x": np.eye(hidden, dtype=np.float32)}
    )
    np.testing.assert_array_equal(emb, logits.T)
    error = np.abs(emb - onnx.numpy_helper.to_array(_tied_graph(vocab, hidden).graph.initializer[0]))
    assert 0 < error.max() < (0.5 if bits == 4 else 0.05)


def test_tied_embedding_on_a_padded_table_and_lm_head_bits(tiny):
    _, float_export, _ = tiny
    # hidden 96 is no multiple of 64: the head's last block is padded, the embedding
    # gets ORT's own 4-bit table; in 8 bits that table cannot be made
    proto = quantize_model(_tied_graph(80, 96), QuantizeOptions(embedding=True, block_size=64))
    assert count_ops(proto) == {"MatMulNBits": 1, "GatherBlockQuantized": 1}
    with pytest.raises(ValueError, match="needs bits=4"):
        quantize_model(_tied_graph(80, 96), QuantizeOptions(bits=8, embedding=True, block_size=64))
    # the lm_head in 8 bits, the rest in 4
    mixed = _quantized(float_export, QuantizeOptions(lm_head_bits=8))
    head = lm_head_node(mixed)
    assert head.op_type == "MatMulNBits" and _attrs(head)["bits"] == 8
    others = {_attrs(n)["bits"] for n in mixed.graph.node if n.op_type == "MatMulNBits" and n is not head}
    assert others == {4}
    assert QuantizeOptions(lm_head_bits=8).name == "int4-b32-sym-acc4-lm_head8"


def test_dynamic_int8(tiny):
    _, float_export, _ = tiny
    proto = _quantized(float_export, QuantizeOptions(bits=8, method="dynamic"))
    ops = count_ops(proto)
    before = _weight_matmuls(onnx.load(float_export.filename))
    assert "MatMulNBits" not in ops and ops["MatMulInteger"] == before
    assert ops["DynamicQuantizeLinear"] >= 1 and _weight_matmuls(proto) == 0


def test_bad_options_say_what_to_do():
    with pytest.raises(ValueError, match="4 or 8 bits"):
        QuantizeOptions(bits=3)
    with pytest.raises(ValueError, match="power of 2"):
        QuantizeOptions(block_size=24)
    with pytest.raises(ValueError, match="use 4, 8 or None"):
        QuantizeOptions(lm_head_bits=2)
    with pytest.raises(ValueError, match="lm_head=True"):
        QuantizeOptions(lm_head=False, lm_head_bits=8)
    with pytest.raises(ValueError, match="set bits=8"):
        QuantizeOptions(method="dynamic")
    with pytest.raises(ValueError, match="'int4', 'int8'"):
        QuantizeOptions.parse("int3")
    with pytest.raises(ValueError, match="without quantize="):
        QuantizeOptions.parse(None, block_size=64)


def test_export_int4_key_metadata_sidecar_validation(tiny):
    model, float_export, int4 = tiny
    assert int4.quantization == QuantizeOptions() and int4.source == float_export.filename
    assert int4.key != float_export.key
    assert os.path.basename(os.path.dirname(int4.filename)).startswith("llama-int4-")
    side = read_sidecar(int4.filename)
    assert side["key_parts"]["options"]["quantize"] == QuantizeOptions().as_dict()
    assert side["source"] == float_export.filename and side["timings"]["quantize"] > 0
    session = ort.InferenceSession(int4.filename, providers=["CPUExecutionProvider"])
    assert contract.metadata_quantization(session) == QuantizeOptions().as_dict()
    # the generation config is still there: onnx_generate reads its eos
    assert contract.metadata_generation_config(session)["eos_token_id"] == 2
    # the validation checks against a tolerance made for quantization, and says so
    report = int4.validation
    assert report.ok and report.quantization["bits"] == 4
    assert {r["inputs"] for r in report.rows} == {"prefill", "prefill_left_padding"}
    for row in report.rows:
        assert row["rtol"] == QUANTIZED_RTOL[4] and 0 < row["relative"] <= row["rtol"]
        assert row["max_abs"] > 1e-4  # far above float32 rounding
    assert "int4 quantized export" in report.table()

    # reused: no second quantization (the file is left alone); other options, other file
    mtime = os.stat(int4.filename).st_mtime_ns
    again = export_causal_lm(model, quantize="int4")
    assert again.cached and again.filename == int4.filename
    assert os.stat(int4.filename).st_mtime_ns == mtime
    assert again.validation.rows == report.rows and again.quantization == QuantizeOptions()
    other = export_causal_lm(model, quantize=QuantizeOptions(block_size=64), verify=False)
    assert not other.cached and other.filename != int4.filename and other.source == int4.source


def test_quantized_validation_still_catches_a_broken_file(tiny, tmp_path):
    model, _, int4 = tiny
    proto = onnx.load(int4.filename)
    # a scrambled quantized weight (the lm_head's scales): no longer the same model
    head = lm_head_node(proto)
    scales = next(i for i in proto.graph.initializer if i.name == head.input[2])
    values = onnx.numpy_helper.to_array(scales)
    rng = np.random.default_rng(0)
    broken = (values * rng.uniform(-20, 20, values.shape)).astype(values.dtype)
    scales.CopyFrom(onnx.numpy_helper.from_array(broken, scales.name))
    path = str(tmp_path / "broken.onnx")
    onnx.save(proto, path)
    with pytest.raises(ExportValidationError, match="int4 quantized"):
        validate_causal_lm(model, path)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["int4", "int8"])
def test_smollm2_quantized_exports_validate_and_report(smollm2, quantize):
    import diag

    model, tokenizer = smollm2
    result = export_causal_lm(model, quantize=quantize)
    assert result.validation.ok, result.validation.table()
    proto = onnx.load(result.filename, load_external_data=False)
    ops = count_ops(proto)
    bits = int(quantize[-1])
    # 30 layers x (q/k/v packed, o, gate/up packed, down) + the tied lm_head
    assert ops["MatMulNBits"] == 30 * 4 + 1 and "Gemm" not in ops and "MatMul" not in ops
    assert {_attrs(n)["bits"] for n in proto.graph.node if n.op_type == "MatMulNBits"} == {bits}
    # the residual sums and their norms stay fused through the quantizer
    assert ops["SkipSimplifiedLayerNormalization"] == 60 and ops["RMSNormalization"] == 1
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[contract.QUANTIZATION_METADATA])["bits"] == bits
    size = sum(
        os.path.getsize(f)
        for f in (result.filename, result.filename + ".data")
        if os.path.exists(f)
    )
    # the float embedding stays (113 MB); the matrices shrink to about bits/32 of float32
    assert size < (200 if bits == 4 else 270) * 2**20

    report = diag.quantization_report(
        model, result, ["def fibonacci(n):"], tokenizer=tokenizer, max_new_tokens=8,
        text="def add(a, b):\n    return a + b\n",
    )  # fmt: skip
    s = report.summary
    assert s["steps"] == 8 and 0 <= s["top1_agreement"] <= 1 and s["mean_kl"] > 0
    # int8 stays close to float32; int4 moves the distribution more
    assert s["mean_kl"] < (0.05 if bits == 8 else 1.0), str(report)
    # on this short text: int8 keeps the perplexity (3.55 in float32), int4 doubles it
    ratio = report.perplexity["onnx"] / report.perplexity["torch"]
    assert (0.9 < ratio < 1.1) if bits == 8 else (1.0 < ratio < 4.0), ratio


def test_cli_takes_quantize():
    from diag.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["export", "--model", "tiny:llama", "-o", "out", "--quantize", "int4"])
    assert args.quantize == "int4"
    assert parser.parse_args(["compare", "--quantize", "int8"]).quantize == "int8"
    assert parser.parse_args(["compare"]).quantize is None
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--model", "tiny:llama", "-o", "out", "--quantize", "int3"])


def test_moe_int4_export_runs_and_is_reported(tmp_path):
    """A mixture-of-experts export quantizes, validates as a quantized file, and
    quantization_report measures it: the attention's projections and the lm_head
    become MatMulNBits, the expert tables (gathered per token) GatherBlockQuantized,
    and no 3-D float weight is left."""
    import diag

    model = get_untrained_model_with_inputs("qwen3_moe")["model"]
    int4 = export_causal_lm(model, tmp_path / "model.onnx", quantize="int4")
    assert int4.validation.ok
    proto = onnx.load(int4.filename, load_external_data=False)
    ops = count_ops(proto)
    layers = model.config.num_hidden_layers
    # per layer: packed q/k/v and o_proj; plus the lm_head
    assert ops["MatMulNBits"] == 2 * layers + 1
    # per layer: the gate/up table and the down table of the routed experts
    assert ops["GatherBlockQuantized"] == 2 * layers
    tables = {i.name for i in proto.graph.initializer
              if len(i.dims) == 3 and i.data_type == onnx.TensorProto.FLOAT}  # fmt: skip
    float_gathers = [n.name for n in proto.graph.node
                     if n.op_type in ("Gather", "GatherND") and n.input[0] in tables]  # fmt: skip
    assert float_gathers == []
    report = diag.quantization_report(model, int4, [[5, 17, 256, 1024]], max_new_tokens=4, text=None)
    agreement = report.table["top1_agreement"]
    assert ((agreement >= 0) & (agreement <= 1)).all()
