"""export_causal_lm on every tiny architecture of the zoo, and on SmolLM2 (slow)."""

from __future__ import annotations

import copy
import json
import os
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from diag import contract
from diag.compat.transformers_api import cache_argument, output_cache
from diag.export import ExportValidationError, export_causal_lm
from diag.export.check.tolerance import NOISE_FACTOR, default_atol
from diag.export.check.validate import validate_causal_lm
from diag.export.check.validation_inputs import make_step_inputs
from diag.export.plan.export_key import export_key
from diag.export.plan.generation_config import generation_config_json
from diag.export.record.export_cache import is_cached, read_sidecar, write_sidecar
from diag.models import get_untrained_model_with_inputs
from diag.models.cache_layout import cache_layout
from unittests.conftest import TINY_ARCHITECTURES, moe_params


@pytest.fixture(scope="module")
def exports():
    """Exports each architecture once for the whole module: name -> (model, result).
    A fresh export (``force``), validated, in the default location of the export cache:
    the ONNX Runtime tests of the same models (``export_causal_lm(model, verify=False)``)
    reuse it instead of exporting each architecture again."""
    done: dict[str, tuple[torch.nn.Module, object]] = {}

    def get(name: str):
        if name not in done:
            model = get_untrained_model_with_inputs(name)["model"]
            done[name] = (model, export_causal_lm(model, force=True))
        return done[name]

    return get


def inputs_names(proto: onnx.ModelProto) -> list[str]:
    return [i.name for i in proto.graph.input]


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_graph_is_lean(filename: str, min_size: int = 2**16) -> None:
    """No initializer is transposed or cast at run time, no large weight stored twice."""
    import hashlib

    proto = onnx.load(filename)  # with the external data: the bytes are compared
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("Transpose", "Cast", "Identity"):
            assert node.input[0] not in inits, f"{node.op_type} of initializer {node.input[0]}"
    contents = Counter(
        hashlib.sha256(onnx.numpy_helper.to_array(i).tobytes()).hexdigest()
        for i in inits.values()
        if np.prod(i.dims) * 4 >= min_size
    )
    duplicated = [h for h, n in contents.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} weights stored twice"


@pytest.mark.parametrize("name", TINY_ARCHITECTURES + moe_params())
def test_tiny_architecture_exports_and_validates(exports, name):
    if name == "falcon" and hasattr(
        get_untrained_model_with_inputs(name)["model"].transformer, "_update_causal_mask"
    ):
        pytest.skip(
            "falcon of transformers 4.57 builds its own float mask (_update_causal_mask): "
            "the rows of the left padding of a prefill differ in ONNX (logits 2.1 apart); "
            "the real tokens and the generated ones agree"
        )
    model, result = exports(name)
    layout = cache_layout(model)
    n = layout.num_layers
    proto = onnx.load(result.filename, load_external_data=False)
    with_pos = contract.POSITION_IDS in [i.name for i in proto.graph.input]
    assert [i.name for i in proto.graph.input] == contract.DIAG_LAYOUT.input_names(
        n, with_position_ids=with_pos
    )
    assert [o.name for o in proto.graph.output] == contract.DIAG_LAYOUT.output_names(n)
    # every zoo forward takes logits_to_keep: one Gather of the kept positions
    assert contract.LOGITS_TO_KEEP in inputs_names(proto)
    assert result.fusions["gather_positions"] == 1, name
    # every residual sum normalized after it: one SkipSimplifiedLayerNormalization (two a
    # layer, the first layer's input norm reads the embedding), no sum left for a norm
    expected = 2 * n if result.fusions["rms_norm"] else 0
    assert result.fusions["skip_norm"] == expected, (name, result.fusions)
    producers = {o: node.op_type for node in proto.graph.node for o in node.output}
    norms_of_sums = [node.name for node in proto.graph.node
                     if node.op_type == "RMSNormalization" and producers.get(node.input[0]) == "Add"]  # fmt: skip
    assert not norms_of_sums, (name, norms_of_sums)
    # the cache inputs have the heads and sizes of the model's own cache (one head for
    # multi-query falcon and latent-attention deepseek_v3, whatever their config says)
    inputs = {i.name: _dims(i) for i in proto.graph.input}
    batch, past = contract.DIM_BATCH, contract.DIM_PAST
    for i, layer in enumerate(layout.layers):
        assert inputs[contract.past_key_name(i)] == [batch, layer.kv_heads, past, layer.head_dim]
        assert inputs[contract.past_value_name(i)] == [
            batch, layer.kv_heads, past, layer.value_head_dim
        ]  # fmt: skip
    table = result.validation.as_dict()
    assert set(table) == {"dummy", "prefill", "decode", "left_padding", "prefill_left_padding"}
    for input_set, row in table.items():
        for group in ("logits", "present.key", "present.value"):
            # torch against ONNX Runtime: export validation's float32 tolerance (a tiny model's
            # float32 noise, |float32 - float64|, stays orders of magnitude below it)
            assert 0 <= row[group] < default_atol(torch.float32), (name, input_set, group, row)
    assert result.validation.ok and not result.cached
    check_graph_is_lean(result.filename)


def test_contract_names_and_dynamic_dims(exports):
    model, result = exports("llama")
    layer = cache_layout(model).layers[1]
    proto = onnx.load(result.filename, load_external_data=False)
    inputs = {i.name: _dims(i) for i in proto.graph.input}
    outputs = {o.name: _dims(o) for o in proto.graph.output}
    batch, seq, past = contract.DIM_BATCH, contract.DIM_SEQ, contract.DIM_PAST
    assert inputs["input_ids"] == [batch, seq]
    assert inputs["position_ids"] == [batch, seq]
    assert inputs["past_key_values.1.value"] == [batch, 4, past, 16]
    assert (layer.kv_heads, layer.value_head_dim) == (4, 16)
    total = outputs["present.0.key"][2]
    assert isinstance(total, str) and past in total and seq in total
    assert inputs["attention_mask"] == [batch, total]
    assert inputs["logits_to_keep"] == [contract.DIM_KEEP]
    assert outputs["logits"] == [batch, contract.DIM_KEEP, model.config.vocab_size]
    assert result.input_names[-1] == contract.LOGITS_TO_KEEP
    assert outputs["present.1.value"] == [batch, 4, total, 16]
    assert os.fspath(result) == result.filename == str(result)
    assert result.input_names == [i.name for i in proto.graph.input]
    side = read_sidecar(result.filename)
    assert side["key"] == result.key and side["validation"]["rows"]
    assert "sdpa_zero_fully_masked_rows" in side["patches"]


def test_two_steps_fed_back_match_torch(exports):
    # the present of a left-padded prefill fed back as the past of a one-token step
    model, result = exports("llama")
    sess = ort.InferenceSession(result.filename, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = make_step_inputs(model, batch=2, seq=5, past=0, left_padding=2)
    empty = np.zeros((2, 4, 0, 16), dtype=np.float32)
    feeds = {k: inputs[k].numpy() for k in ("input_ids", "attention_mask", "position_ids")}
    for i in range(2):
        feeds[contract.past_key_name(i)] = feeds[contract.past_value_name(i)] = empty
    contract.keep_every_position(feeds, [i.name for i in sess.get_inputs()])
    out = dict(zip(names, sess.run(None, feeds), strict=True))
    with torch.no_grad():
        expected = model(**inputs)
    np.testing.assert_allclose(
        out["logits"], expected.logits.numpy(), atol=default_atol(torch.float32)
    )
    next_ids = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    mask = np.concatenate([feeds["attention_mask"], np.ones((2, 1), dtype=np.int64)], axis=1)
    feeds2 = {
        "input_ids": next_ids,
        "attention_mask": mask,
        "position_ids": feeds["position_ids"][:, -1:] + 1,
        "logits_to_keep": contract.last_position(1),
    }
    for i in range(2):
        feeds2[contract.past_key_name(i)] = out[contract.present_key_name(i)]
        feeds2[contract.past_value_name(i)] = out[contract.present_value_name(i)]
    out2 = dict(zip(names, sess.run(None, feeds2), strict=True))
    with torch.no_grad():
        expected2 = model(
            input_ids=torch.from_numpy(next_ids),
            attention_mask=torch.from_numpy(mask),
            position_ids=torch.from_numpy(feeds2["position_ids"]),
            **{cache_argument(model): output_cache(expected)},
        )
    np.testing.assert_allclose(
        out2["logits"], expected2.logits.numpy(), atol=default_atol(torch.float32)
    )
    assert out2["present.0.key"].shape == (2, 4, 6, 16)


def test_validation_raises_on_a_wrong_model(exports):
    model, result = exports("llama")
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)
    with pytest.raises(ExportValidationError, match=r"differs from torch by more than atol=0.0001"):
        validate_causal_lm(other, result.filename)
    report = validate_causal_lm(other, result.filename, raise_on_error=False)
    assert not report.ok and report.as_dict()["decode"]["logits"] > 1e-2
    # the cache is not involved: present keys and values still agree
    assert report.as_dict()["decode"]["present.key"] < 1e-4
    assert "FAILED" in report.table()


def test_float32_noise_floor(exports):
    # with an absurd atol every group exceeds it: the float64 reference then measures
    # the float32 noise and the differences, of the same order, pass within a few times it
    model, result = exports("llama")
    report = validate_causal_lm(model, result.filename, atol=1e-12)
    assert report.ok
    for row in report.rows:
        assert 0 < row["noise"] < 1e-5 and row["tolerance"] == NOISE_FACTOR * row["noise"]
        assert row["max_abs"] <= row["tolerance"]
    assert "(<= " in report.table() and "logits tolerance" in report.as_dict()["decode"]
    with pytest.raises(ExportValidationError, match="atol=1e-12:"):
        validate_causal_lm(model, result.filename, atol=1e-12, noise_floor=False)


# pinned: the export cache's key, sidecar and force are diag's own logic (a second
# export of llama); every release exports each architecture above
@pytest.mark.pinned
def test_cached_export_is_reused_and_force_exports_again(exports):
    model, result = exports("llama")
    # the file is written again by an export and left alone by a reuse
    mtime = os.stat(result.filename).st_mtime_ns
    again = export_causal_lm(model, result.filename)
    assert again.cached and again.key == result.key
    # what the export did is remembered: the fusions of two tiny llama layers
    assert result.fusions["rms_norm"] == 5 and again.fusions == result.fusions
    assert again.validation.as_dict() == result.validation.as_dict()
    assert os.stat(result.filename).st_mtime_ns == mtime

    forced = export_causal_lm(model, result.filename, force=True, verify=False)
    assert not forced.cached and forced.key == result.key
    mtime_forced = os.stat(result.filename).st_mtime_ns
    assert mtime_forced != mtime
    assert forced.validation is None and read_sidecar(result.filename)["validation"] is None
    # reused with verify=True: validated now, once, and remembered
    checked = export_causal_lm(model, result.filename)
    assert checked.cached and checked.validation.ok
    assert os.stat(result.filename).st_mtime_ns == mtime_forced
    assert read_sidecar(result.filename)["validation"]["rows"] == checked.validation.rows

    # other weights, other key: the file is not reused for them
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.model.norm.weight.add_(1)
    options = {
        "exporter": "onnx-dynamo",
        "opset": 23,
        "with_position_ids": True,
        "fuse": True,
        "generation_config": generation_config_json(model),
        "logits_to_keep": True,
    }
    assert export_key(changed, options) != result.key == export_key(model, options)
    assert not is_cached(result.filename, export_key(changed, options))
    assert export_key(model, {**options, "opset": 18}) != result.key


def test_default_location_under_diag_cache(exports, tmp_path, monkeypatch):
    import shutil

    model, result = exports("llama")
    monkeypatch.setenv("DIAG_CACHE", str(tmp_path))
    # the zoo's configs carry no _name_or_path: the model type names the folder
    folder = tmp_path / "onnx" / f"{model.config.model_type}-{result.key}"
    folder.mkdir(parents=True)
    for suffix in ("", ".json"):
        shutil.copy(result.filename + suffix, folder / f"model.onnx{suffix}")
    mtime = os.stat(folder / "model.onnx").st_mtime_ns

    found = export_causal_lm(model)
    assert found.cached and found.filename == str(folder / "model.onnx")
    assert os.stat(found.filename).st_mtime_ns == mtime
    # a sidecar with another key (another version of diag, other weights) is not reused:
    # the model is exported again in its place
    side = read_sidecar(found.filename)
    side["key"] = "0" * 16
    write_sidecar(found.filename, side)
    again = export_causal_lm(model, verify=False)
    assert not again.cached and again.filename == found.filename
    assert os.stat(found.filename).st_mtime_ns != mtime
    assert read_sidecar(found.filename)["key"] == result.key


def test_bad_models_get_clear_errors():
    with pytest.raises(TypeError, match="expects a torch causal LM"):
        export_causal_lm("model.onnx")
    with pytest.raises(TypeError, match="has no `config`"):
        export_causal_lm(torch.nn.Linear(2, 2))


def test_a_folder_as_filename_is_refused_before_the_export(tmp_path):
    from diag.models import get_untrained_model_with_inputs

    model = get_untrained_model_with_inputs("llama")["model"]
    with pytest.raises(IsADirectoryError, match=r"is a folder; give the path of a file .*model.onnx"):
        export_causal_lm(model, tmp_path)
    with pytest.raises(TypeError, match=r"opset='23': give an int \(23, 24\) or None"):
        export_causal_lm(model, tmp_path / "model.onnx", opset="23")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_smollm2_exports_and_validates(smollm2):
    model, _ = smollm2
    # in the default location: the one export of SmolLM2 the slow tests share (made by
    # the first that needs it; the key covers diag's export code), validated here
    result = export_causal_lm(model)
    folder = os.path.dirname(result.filename)
    print(result.timings.as_dict(), result.validation_time)
    print(result.validation.table())
    assert result.validation.ok
    # 30 float32 layers: above 1e-4 absolute on logits of magnitude ~30, but within the
    # float32 noise; an export error would be of the order of the logits themselves
    for row in result.validation.rows:
        assert row["max_abs"] <= row.get("tolerance", 1e-4), row
        assert row["max_abs"] < 1e-2, row
    assert sorted(os.listdir(folder)) == ["model.onnx", "model.onnx.data", "model.onnx.json"]
    proto = onnx.load(result.filename, load_external_data=False)
    # ids, mask, positions, the cache of every layer, and the positions of the logits
    names = [i.name for i in proto.graph.input]
    assert len(names) == 4 + 2 * model.config.num_hidden_layers, names[:4]
    assert names[-1] == "logits_to_keep"
    # the generation config travels in the metadata: onnx_generate stops at eos 2
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["generation_config"])["eos_token_id"] == 2
    check_graph_is_lean(result.filename)
    ops = Counter(n.op_type for n in proto.graph.node)
    layers = model.config.num_hidden_layers
    assert result.fusions["skip_norm"] == ops["SkipSimplifiedLayerNormalization"] == 2 * layers
    assert ops["RMSNormalization"] == 1  # the first layer's, on the embedding
    # tied lm_head: the 49152 x 576 embedding is stored once, read by Gather and Gemm
    embedding = [i for i in proto.graph.initializer if list(i.dims) == [49152, 576]]
    assert len(embedding) == 1
    readers = sorted(n.op_type for n in proto.graph.node if embedding[0].name in n.input)
    assert readers == ["Gather", "Gemm"]
    size = os.path.getsize(result.filename + ".data")
    params = sum(p.numel() for p in model.parameters())
    assert size < params * 4 * 1.02  # no weight stored twice
