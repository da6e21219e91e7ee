"""diag.contract.files: a model file that is missing, a folder, empty, truncated or not
ONNX, and a folder of another tool with a broken or missing side file, get a message
naming the file, the problem and the fix, from every entry point that reads a path
(onnx_generate, detect_layout, inspect_onnx, the diagnosis), never protobuf's
DecodeError, json's JSONDecodeError or ONNX Runtime's load error."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import onnx
import pytest
import torch

import diag
from diag.contract import ContractError
from diag.contract.detect import detect_layout
from diag.contract.files import ModelFileError, load_onnx, read_json

AGAIN = "export it again .*or copy it again"


def _write_model(bigram_lm, folder: Path, name: str = "model.onnx") -> Path:
    model, _ = bigram_lm()
    path = folder / name
    onnx.save(model, path)
    return path


def _bad(kind: str, bigram_lm, tmp_path: Path) -> Path:
    """A path of the kind of bad file ``kind`` names."""
    if kind == "missing":
        return tmp_path / "nope.onnx"
    if kind == "a folder":
        (tmp_path / "d.onnx").mkdir()
        return tmp_path / "d.onnx"
    path = tmp_path / "bad.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        good = _write_model(bigram_lm, tmp_path).read_bytes()
        path.write_bytes(good[: len(good) // 3])
    elif kind == "not ONNX":
        path.write_text("name,value\na,1\n" * 20)
    elif kind == "ONNX without a graph":
        # a ModelProto with its header only (what a tool writing no graph leaves)
        path.write_bytes(onnx.ModelProto(ir_version=10, producer_name="x").SerializeToString())
    return path


# kind of bad file -> (error type, what the message says)
BAD_FILES = {
    "missing": (FileNotFoundError, r"no ONNX file at '.*nope.onnx'; export one with diag.export_causal_lm"),
    "a folder": (IsADirectoryError, r"'.*d.onnx' is a folder where the ONNX file should be; export one"),
    "empty": (ModelFileError, rf"'.*bad.onnx' is empty \(0 bytes\), not an ONNX model; {AGAIN}"),
    "truncated": (ModelFileError, rf"'.*bad.onnx' is not an ONNX model \(truncated, or another kind of file: protobuf says .*\); {AGAIN}"),
    "not ONNX": (ModelFileError, r"'.*bad.onnx' is not an ONNX model \(truncated, or another kind"),
    "ONNX without a graph": (ModelFileError, rf"'.*bad.onnx' holds no ONNX graph with outputs; {AGAIN}"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_load_onnx_names_the_problem_and_the_fix(kind, bigram_lm, tmp_path):
    error, message = BAD_FILES[kind]
    with pytest.raises(error, match=message):
        load_onnx(_bad(kind, bigram_lm, tmp_path))


# the ones find_model reaches (a missing path and a folder have their own message there)
READ_BY_ENTRY_POINTS = ["empty", "truncated", "not ONNX", "ONNX without a graph"]


@pytest.mark.parametrize("kind", READ_BY_ENTRY_POINTS)
def test_onnx_generate_and_detect_layout_say_the_file_is_bad(kind, bigram_lm, tmp_path):
    error, message = BAD_FILES[kind]
    path = _bad(kind, bigram_lm, tmp_path)
    with pytest.raises(error, match=message):
        diag.onnx_generate(str(path), torch.tensor([[1, 2]]), max_new_tokens=1)
    with pytest.raises(error, match=message):
        detect_layout(path)


@pytest.mark.parametrize("kind", READ_BY_ENTRY_POINTS)
def test_inspect_onnx_lists_the_bad_file_as_its_problem(kind, bigram_lm, tmp_path):
    _, message = BAD_FILES[kind]
    inspection = diag.inspect_onnx(_bad(kind, bigram_lm, tmp_path))
    assert inspection.layout is None
    assert len(inspection.problems) == 1
    assert re.search(message, inspection.problems[0]), inspection.problems[0]


@pytest.mark.parametrize("kind", ["truncated", "not ONNX"])
def test_the_diagnosis_says_the_file_is_bad(kind, bigram_lm, tmp_path):
    error, message = BAD_FILES[kind]
    path = str(_bad(kind, bigram_lm, tmp_path))
    reference, _ = bigram_lm()  # stands for the torch side: a good model
    with pytest.raises(error, match=message):
        diag.compare_teacher_forced(reference, path, torch.tensor([[1, 2]]), max_new_tokens=1)


def _genai_folder(folder: Path, bigram_lm, config: str | dict | None, onnx_file: bool) -> Path:
    folder.mkdir()
    if onnx_file:
        _write_model(bigram_lm, folder)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (folder / "genai_config.json").write_text(text)
    return folder


def _transformers_folder(
    folder: Path, bigram_lm, export: str | dict, files: tuple[str, ...]
) -> Path:
    folder.mkdir()
    for name in files:
        _write_model(bigram_lm, folder, name)
    (folder / "export.json").write_text(export if isinstance(export, str) else json.dumps(export))
    return folder


PAIR = {"components": {"prefill": {"file": "prefill.onnx"}, "decode": {"file": "decode.onnx"}}}

# folder of another tool -> (builder, error type, what the message says)
BAD_FOLDERS = {
    "genai config not JSON": (
        lambda d, b: _genai_folder(d, b, "{not json", True), ModelFileError,
        r"onnxruntime-genai's config '.*genai_config.json' is not valid JSON \(.*\); write it again",
    ),
    "genai config a list": (
        lambda d, b: _genai_folder(d, b, "[1, 2]", True), ModelFileError,
        r"genai_config.json' holds a JSON list, not an object",
    ),
    "genai config without its onnx file": (
        lambda d, b: _genai_folder(d, b, {"model": {"decoder": {"filename": "model.onnx"}}}, False),
        ContractError, r"names the decoder 'model.onnx', which is not there; build the folder again",
    ),
    # a folder's model.onnx is its graph (diag.contract.detect.onnx_file_in); without one,
    # two graphs and no side file leave nothing to choose by
    "two onnx files, no genai config, no model.onnx": (
        lambda d, b: (
            _genai_folder(d, b, None, False),
            _write_model(b, d, "decoder.onnx"),
            _write_model(b, d, "other.onnx"),
        )[0],
        ContractError, r"no genai_config.json .* holds 2 .onnx files .*; pass the .onnx file itself",
    ),
    "transformers export.json without its graphs": (
        lambda d, b: _transformers_folder(d, b, PAIR, ("decode.onnx",)), ContractError,
        r"export.json in '.*' names the graphs \['prefill.onnx', 'decode.onnx'\], and "
        r"\['prefill.onnx'\] are not there; export the model again",
    ),
    "transformers export.json not JSON": (
        lambda d, b: _transformers_folder(d, b, "", ()), ModelFileError,
        r"transformers' export file '.*export.json' is not valid JSON",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BAD_FOLDERS))
def test_a_folder_of_another_tool_missing_a_piece_says_which(kind, bigram_lm, tmp_path):
    build, error, message = BAD_FOLDERS[kind]
    folder = build(tmp_path / "model", bigram_lm)
    with pytest.raises(error, match=message):
        diag.onnx_generate(str(folder), torch.tensor([[1, 2]]), max_new_tokens=1)
    assert diag.inspect_onnx(folder).problems != []


def test_read_json_reads_an_object(tmp_path):
    (tmp_path / "c.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "c.json", "generation config") == {"a": 1}
    with pytest.raises(FileNotFoundError, match="no generation config at '.*nope.json'"):
        read_json(tmp_path / "nope.json", "generation config")


def test_load_onnx_says_a_hard_linked_weights_file_must_be_copied(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), path, save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)  # fmt: skip
    assert load_onnx(path, load_external_data=True).graph.initializer[0].raw_data
    os.link(tmp_path / "model.onnx.data", tmp_path / "linked.data")
    with pytest.raises(ModelFileError, match=r"several hard links.*copy the folder with `cp`"):
        load_onnx(path, load_external_data=True)
