"""A graph's inputs, outputs and metadata read as a session gives them."""

from __future__ import annotations

import onnx
import onnxruntime as ort
from onnx import helper

from diag.contract import GENERATION_CONFIG_METADATA, read_contract
from diag.contract.graph_view import GraphView


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _as_session_gives(items) -> list[tuple]:
    return [(i.name, i.type, list(i.shape)) for i in items]


def test_view_gives_what_the_session_gives(bigram_lm):
    model, _ = bigram_lm(num_layers=2, vocab=11, with_logits_to_keep=True)
    helper.set_model_props(model, {GENERATION_CONFIG_METADATA: '{"eos_token_id": 3}'})
    view, session = GraphView(model), _session(model)
    assert _as_session_gives(view.get_inputs()) == _as_session_gives(session.get_inputs())
    assert _as_session_gives(view.get_outputs()) == _as_session_gives(session.get_outputs())
    assert (
        view.get_modelmeta().custom_metadata_map
        == session.get_modelmeta().custom_metadata_map
        == {GENERATION_CONFIG_METADATA: '{"eos_token_id": 3}'}
    )
    assert read_contract(view) == read_contract(session)


def test_initializers_listed_as_inputs_are_left_out(bigram_lm):
    # an exporter writing the weights among the graph's inputs (IR 3 style): a session
    # takes them as weights, not as inputs to feed
    model, _ = bigram_lm()
    model.graph.input.append(helper.make_tensor_value_info("E", onnx.TensorProto.FLOAT, [16, 16]))
    names = [i.name for i in GraphView(model).get_inputs()]
    assert "E" not in names
    assert names == [i.name for i in _session(model).get_inputs()]
