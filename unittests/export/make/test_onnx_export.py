"""to_onnx on small modules, atomic saving, runtime weight transpositions removed."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from diag.export import ExportTimings, to_onnx
from diag.export.make import save as save_module
from diag.export.make.rename import rename_io
from diag.export.make.save import save_model_atomic
from diag.export.make.weight_transpose import fold_weight_transposes
from diag.helpers.rounding import matmul_tolerance


class TiedLM(torch.nn.Module):
    """An embedding whose weight the output projection reuses, like SmolLM2 or gpt2."""

    def __init__(self, vocab: int = 50, hidden: int = 8):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.mlp = torch.nn.Linear(hidden, hidden)
        self.head = torch.nn.Linear(hidden, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mlp(self.embed(ids))))


def _run(path_or_proto, feeds):
    data = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_to_onnx_linear_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(5, 4)
    path = tmp_path / "lin.onnx"
    timings = ExportTimings()
    proto = to_onnx(
        model,
        (x,),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        filename=path,
        input_names=["x"],
        output_names=["y"],
        timings=timings,
    )
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["y"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert sorted(os.listdir(tmp_path)) == ["lin.onnx"]  # small: no .data, no temp left
    x2 = torch.randn(7, 4)
    (got,) = _run(str(path), {"x": x2.numpy()})
    np.testing.assert_allclose(got, model(x2).detach().numpy(), atol=1e-5)
    assert timings.torch_export > 0 and timings.translate > 0 and timings.save > 0
    assert set(timings.as_dict()) == {
        "torch.export", "translate", "optimize", "save", "quantize", "total"
    }  # fmt: skip
    assert timings.quantize == 0  # to_onnx never quantizes: export_causal_lm(quantize=) does


def test_to_onnx_bad_arguments():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="exporter='torchscript' is not supported"):
        to_onnx(model, (torch.randn(1, 2),), exporter="torchscript")
    with pytest.raises(TypeError, match="args must be a tuple"):
        to_onnx(model, [torch.randn(1, 2)])
    with pytest.raises(ValueError, match="3 names given for the inputs"):
        to_onnx(model, (torch.randn(1, 2),), input_names=["a", "b", "c"])


def test_to_onnx_refuses_what_is_not_a_module_and_a_folder_as_file(tmp_path):
    # both before the export: a long trace would end on them otherwise
    with pytest.raises(TypeError, match="exports a torch.nn.Module, got str; load a model first"):
        to_onnx("tiny:llama", (torch.randn(1, 2),))
    with pytest.raises(IsADirectoryError, match="is a folder; give the path of a file"):
        to_onnx(torch.nn.Linear(2, 2), (torch.randn(1, 2),), filename=tmp_path)
    assert list(tmp_path.iterdir()) == []


class ComplexRotation(torch.nn.Module):
    """A rotation written with complex numbers, like deepseek_v2's rotary embedding."""

    def forward(self, x):
        angles = torch.polar(torch.ones_like(x[..., ::2]), x[..., ::2])
        rotated = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2)) * angles
        return torch.view_as_real(rotated).flatten(-2)


def test_complex_numbers_are_refused_with_the_reason(tmp_path):
    x = torch.randn(2, 8)
    assert ComplexRotation()(x).shape == (2, 8)
    with pytest.raises(TypeError, match="ComplexRotation computes with complex numbers"):
        to_onnx(ComplexRotation(), (x,), filename=str(tmp_path / "m.onnx"))
    assert not os.path.exists(tmp_path / "m.onnx")


def test_tied_weight_read_by_gemm_and_stored_once(tmp_path):
    torch.manual_seed(1)
    model = TiedLM()
    ids = torch.randint(0, 50, (2, 3))
    timings = ExportTimings()
    path = tmp_path / "tied.onnx"
    proto = to_onnx(
        model,
        (ids,),
        dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},),
        filename=path,
        timings=timings,
    )
    inits = {i.name: i for i in proto.graph.initializer}
    embedding_sized = [n for n, i in inits.items() if sorted(i.dims) == [8, 50]]
    assert len(embedding_sized) == 1, embedding_sized  # stored once
    # no transposition of an initializer at run time
    for node in proto.graph.node:
        if node.op_type == "Transpose":
            assert node.input[0] not in inits, node
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 1 and gemms[0].input[1] == embedding_sized[0]
    assert any("tied" in note for note in timings.notes)
    ids2 = torch.randint(0, 50, (3, 5))
    (got,) = _run(str(path), {proto.graph.input[0].name: ids2.numpy()})
    np.testing.assert_allclose(got, model(ids2).detach().numpy(), atol=1e-5)


def _transposed_matmul_model(tied: bool) -> tuple[ir.Model, np.ndarray]:
    w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    x = ir.Value(name="x", shape=ir.Shape(["b", "s", 3]), type=ir.TensorType(ir.DataType.FLOAT))
    ids = ir.Value(name="ids", shape=ir.Shape(["b"]), type=ir.TensorType(ir.DataType.INT64))
    weight = ir.Value(name="w", const_value=ir.tensor(w, name="w"))
    t = ir.node("Transpose", [weight], attributes={"perm": [1, 0]})
    mm = ir.node("MatMul", [x, t.outputs[0]])
    mm.outputs[0].name = "y"
    nodes = [t, mm]
    inputs, outputs = [x], [mm.outputs[0]]
    if tied:
        g = ir.node("Gather", [weight, ids])
        g.outputs[0].name = "e"
        nodes.append(g)
        inputs.append(ids)
        outputs.append(g.outputs[0])
    graph = ir.Graph(inputs, outputs, nodes=nodes, initializers=[weight], opset_imports={"": 18})
    return ir.Model(graph, ir_version=10), w


@pytest.mark.parametrize("tied", [False, True])
def test_fold_weight_transposes(tied):
    model, w = _transposed_matmul_model(tied)
    notes = fold_weight_transposes(model)
    assert notes == [
        "w: read by Gemm(transB=1), stored once (tied)" if tied else "w: pre-transposed"
    ]
    ops = [n.op_type for n in model.graph]
    assert "Transpose" not in ops
    assert len(model.graph.initializers["w"].const_value.shape) == 2
    assert [o.name for o in model.graph.outputs][0] == "y"
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    feeds = {"x": x}
    if tied:
        feeds["ids"] = np.array([4, 0], dtype=np.int64)
    got = _run(ir.serde.serialize_model(model), feeds)
    # ONNX Runtime's Gemm and numpy's product round in other orders
    np.testing.assert_allclose(got[0], x @ w.T, rtol=0, atol=matmul_tolerance(x, w.T))
    if tied:
        np.testing.assert_allclose(got[1], w[[4, 0]])


def _big_model(n: int = 4096) -> ir.Model:
    x = ir.Value(name="x", shape=ir.Shape([n]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(name="w", const_value=ir.tensor(np.ones(n, dtype=np.float32), name="w"))
    add = ir.node("Add", [x, w])
    add.outputs[0].name = "y"
    graph = ir.Graph([x], add.outputs, nodes=[add], initializers=[w], opset_imports={"": 18})
    return ir.Model(graph, ir_version=10)


def test_save_external_data_above_threshold(tmp_path):
    path = tmp_path / "big.onnx"
    written = save_model_atomic(_big_model(), path, external_data_threshold=1000)
    assert written == [str(path), str(path) + ".data"]
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    (got,) = _run(str(path), {"x": np.zeros(4096, dtype=np.float32)})
    assert got.sum() == 4096
    # saved again small: the stale .data goes away
    save_model_atomic(_big_model(), path, external_data=False)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx"]
    assert onnx.load(str(path)).graph.initializer[0].data_location == onnx.TensorProto.DEFAULT


def test_save_failure_leaves_previous_model_untouched(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    save_model_atomic(_big_model(), path, external_data=True)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}

    def failing_save(model, filename, external_data=None, **kwargs):
        # writes half of a model, then fails (disk full, interrupted...)
        with open(filename, "wb") as f:
            f.write(b"\x08\x0a half")
        if external_data:
            with open(os.path.join(os.path.dirname(filename), external_data), "wb") as f:
                f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(save_module.ir, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(_big_model(8192), path, external_data=True)
    after = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    assert after == before  # no temp folder left, same bytes
    monkeypatch.undo()
    # and on a fresh destination, nothing at all is left behind
    monkeypatch.setattr(save_module.ir, "save", failing_save)
    with pytest.raises(OSError):
        save_model_atomic(_big_model(), tmp_path / "other" / "n.onnx", external_data=True)
    assert os.listdir(tmp_path / "other") == []


def test_rename_io_moves_conflicting_names():
    model, _ = _transposed_matmul_model(tied=False)
    rename_io(model, ["w_in"], ["x"], dims={"b": "batch"})
    assert [v.name for v in model.graph.inputs] == ["w_in"]
    assert [v.name for v in model.graph.outputs] == ["x"]
    assert str(model.graph.inputs[0].shape) == "[batch,s,3]"
    tied, _ = _transposed_matmul_model(tied=True)  # two inputs
    with pytest.raises(ValueError, match="duplicated names"):
        rename_io(tied, ["a", "a"], None)
