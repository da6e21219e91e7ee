"""Session creation: files, protos with external data, options, providers."""

from __future__ import annotations

import os

import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from diag.ort.session import (
    default_session_options,
    machine_is_busy,
    make_session,
    normalize_providers,
    physical_cores,
    provider_device,
)


def test_default_options():
    opts = default_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == physical_cores()
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert default_session_options(intra_op_num_threads=1).intra_op_num_threads == 1
    key = "session.intra_op.allow_spinning"
    assert default_session_options(allow_spinning=False).get_session_config_entry(key) == "0"
    assert default_session_options(allow_spinning=True).get_session_config_entry(key) == "1"
    assert isinstance(machine_is_busy(), bool)


@pytest.mark.parametrize("busy, expected", [(True, "0"), (False, "1")])
def test_spinning_follows_the_load(monkeypatch, busy, expected):
    import diag.ort.session as session_module

    monkeypatch.setattr(session_module, "machine_is_busy", lambda: busy)
    opts = default_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == expected
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_from_file_proto_and_ir(bigram_lm, tmp_path):
    model, _ = bigram_lm()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    for source in (str(path), path, model, ir.serde.deserialize_model(model)):
        sess = make_session(source)
        assert [i.name for i in sess.get_inputs()][:3] == [
            "input_ids",
            "attention_mask",
            "position_ids",
        ]
        assert sess.get_providers() == ["CPUExecutionProvider"]
        assert provider_device(sess) == ("cpu", 0)


def test_proto_with_external_data(bigram_lm, tmp_path):
    model, _ = bigram_lm(vocab=64)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    lazy = onnx.load(path, load_external_data=False)
    with pytest.raises(ValueError, match="base_dir"):
        make_session(lazy)
    sess = make_session(lazy, base_dir=tmp_path)
    assert sess.get_outputs()[0].name == "logits"
    # the caller's proto is left as it was (still pointing to its external file)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in lazy.graph.initializer)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_causal_lm"):
        make_session(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="path to an .onnx file"):
        make_session(42)


def test_providers():
    assert normalize_providers(None) == ["CPUExecutionProvider"]
    assert normalize_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="not available.*CPUExecutionProvider"):
        normalize_providers(["NoSuchExecutionProvider"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            normalize_providers("CUDAExecutionProvider")
    with pytest.raises(TypeError, match="providers must be names"):
        normalize_providers([3])
