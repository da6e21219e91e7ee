"""Everything the contract reads of a model, in one value, from each thing a user holds."""

from __future__ import annotations

import json

import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper

from diag.contract import (
    DIAG_LAYOUT,
    GENERATION_CONFIG_METADATA,
    ContractError,
    ContractInfo,
    read_contract,
)
from diag.contract.description import describe_model, static_max_length
from diag.contract.detect import detect_layout
from diag.contract.graph_view import GraphView


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _read_from_session(model) -> ContractInfo:
    """The contract a session of ``model`` gives, read as its detected layout."""
    session = model if isinstance(model, ort.InferenceSession) else _session(model)
    return read_contract(session, layout=detect_layout(session))


@pytest.fixture
def bigram(bigram_lm) -> onnx.ModelProto:
    model, _ = bigram_lm(num_layers=3, vocab=11)
    helper.set_model_props(model, {GENERATION_CONFIG_METADATA: '{"eos_token_id": 3}'})
    return model


def test_a_file_is_read_once_whole(bigram, tmp_path):
    path = str(tmp_path / "model.onnx")
    onnx.save(bigram, path)
    description = describe_model(path)
    assert description.paths == (path,) and description.source == path
    assert description.graph is None
    assert description.layout.name == DIAG_LAYOUT.name
    # the contract read from the file's graph is the one a session reads
    assert description.contract == _read_from_session(bigram)
    assert description.contract.num_layers == 3
    assert description.generation_defaults == {"eos_token_id": 3}
    assert description.max_length is None


def test_side_files_come_before_the_metadata(bigram, tmp_path):
    onnx.save(bigram, tmp_path / "model.onnx")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 7}))
    assert describe_model(tmp_path).generation_defaults == {"eos_token_id": 7}


def test_a_graph_in_memory(bigram):
    for given in (bigram, ir.serde.deserialize_model(bigram)):
        description = describe_model(given)
        assert description.paths == ()
        assert isinstance(description.graph, onnx.ModelProto)
        assert description.source is description.graph
        assert description.contract == _read_from_session(bigram)
        assert description.generation_defaults == {"eos_token_id": 3}


def test_a_session_is_read_from_its_names_and_metadata(bigram):
    session = _session(bigram)
    description = describe_model(session)
    assert description.paths == () and description.graph is None and description.source is None
    assert description.contract == _read_from_session(session)
    assert description.generation_defaults == {"eos_token_id": 3}


def test_layout_overrides_apply(bigram):
    description = describe_model(bigram, layout={"padding": "right"})
    assert description.layout.padding == "right"
    assert description.contract.layout is description.layout


def test_anything_else_is_refused():
    with pytest.raises(TypeError, match="an onnxruntime.InferenceSession, got int"):
        describe_model(42)


def test_static_cache_length(bigram):
    # a layout that writes the cache in place: its length from the layout, else an
    # error saying how to export one
    static = {"cache_position": "cache_position"}
    assert describe_model(bigram, layout={**static, "max_length": 8}).max_length == 8
    with pytest.raises(ValueError, match="no static length.*cache='static'"):
        describe_model(bigram, layout=static)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(bigram)
    fixed.graph.input[3].type.tensor_type.shape.dim[2].dim_value = 5
    assert static_max_length(GraphView(fixed)) == 5
    helper.set_model_props(fixed, {"static_cache": '{"max_length": 9}'})
    assert static_max_length(GraphView(fixed)) == 9


def test_prefill_graph_without_the_cache_is_refused(bigram_lm, tmp_path):
    # transformers' exporter's pair, whose prefill graph returns one layer of two
    prefill, _ = bigram_lm(num_layers=2, num_present_layers=1, with_position_ids=False)
    decode, _ = bigram_lm(num_layers=2, with_position_ids=False)
    onnx.save(prefill, tmp_path / "prefill.onnx")
    onnx.save(decode, tmp_path / "decode.onnx")
    components = {"prefill": {"file": "prefill.onnx"}, "decode": {"file": "decode.onnx"}}
    (tmp_path / "export.json").write_text(json.dumps({"components": components}))
    with pytest.raises(ContractError, match=r"prefill graph lacks the outputs \['present.1.key'"):
        describe_model(tmp_path)
