"""quantization_report on a case built to disagree (one matrix of the tiny llama's
export perturbed, as a quantization would, enough to flip some tokens, not all): its
numbers against ones computed here without diag's loops (one full-sequence forward on
each side, numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import diag
from diag.contract import keep_every_position
from diag.diagnose.quantization import QuantizationReport, resolve_onnx

TEXT = [1, 40, 7, 300, 12, 5000, 9, 77, 1024, 3]
#: the matrix perturbed and by how much (noise of this standard deviation): 2 of the
#: 10 greedy steps of the tiny llama flip
PERTURBED = "model.layers.3.mlp.down_proj.weight"
NOISE = 0.02


@dataclass
class Perturbed:
    path: str


@pytest.fixture(scope="module")
def perturbed(tiny_onnx) -> Perturbed:
    proto = onnx.load(tiny_onnx)
    init = next((i for i in proto.graph.initializer if i.name == PERTURBED), None)
    assert init is not None, f"no initializer {PERTURBED!r} in the export"
    w = numpy_helper.to_array(init).copy()
    w += (NOISE * np.random.default_rng(0).standard_normal(w.shape)).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    path = tiny_onnx.replace(".onnx", ".perturbed.onnx")
    onnx.save(proto, path)
    return Perturbed(path)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _onnx_full_logits(path: str, ids: list[int]) -> np.ndarray:
    """Logits of every position of ``ids`` in one ONNX Runtime run, empty cache."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    n = len(ids)
    feeds = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
    }
    for i in sess.get_inputs():
        if i.name == "position_ids":
            feeds[i.name] = np.arange(n, dtype=np.int64)[None]
        elif i.name.startswith("past_key_values"):
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    keep_every_position(feeds, [i.name for i in sess.get_inputs()])
    return sess.run(["logits"], feeds)[0][0]


def _torch_full_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def _expected(model, path, prompt, stream, n):
    """Teacher-forced figures along torch's greedy stream: step i is the position that
    predicts the i-th new token."""
    ids = prompt[0].tolist() + stream[: n - 1]
    start = prompt.shape[1] - 1
    lt = _log_softmax(_torch_full_logits(model, ids)[start:])
    lo = _log_softmax(_onnx_full_logits(path, ids)[start:])
    agree = lt.argmax(-1) == lo.argmax(-1)
    kl = (np.exp(lt) * (lt - lo)).sum(-1)
    top_t = np.argsort(-lt, -1)[:, :5]
    top_o = np.argsort(-lo, -1)[:, :5]
    overlap = np.array([len(set(a) & set(b)) / 5 for a, b in zip(top_t, top_o, strict=True)])
    return agree, kl, overlap


def _perplexities(model, path, ids):
    lt = _log_softmax(_torch_full_logits(model, ids))
    lo = _log_softmax(_onnx_full_logits(path, ids))
    rows = np.arange(len(ids) - 1)
    return (
        float(np.exp(-lt[rows, ids[1:]].mean())),
        float(np.exp(-lo[rows, ids[1:]].mean())),
    )


@pytest.fixture(scope="module")
def report(tiny_model, perturbed, prompt, max_new_tokens) -> QuantizationReport:
    prompts = [prompt[0].tolist(), prompt[0, 2:].tolist()]
    return diag.quantization_report(
        tiny_model, perturbed.path, prompts, max_new_tokens=max_new_tokens, text=TEXT
    )


def test_report_numbers_match_an_independent_computation(
    report, tiny_model, perturbed, prompt, greedy_stream, max_new_tokens
):
    agree, kl, overlap = _expected(
        tiny_model, perturbed.path, prompt, greedy_stream, max_new_tokens
    )
    # the perturbed matrix makes the sides disagree on some steps, not on all
    assert 0 < agree.mean() < 1, agree
    row = report.table.iloc[0]
    assert row["steps"] == max_new_tokens
    assert row["top1_agreement"] == pytest.approx(agree.mean())
    assert row["mean_kl"] == pytest.approx(kl.mean(), rel=1e-3)
    assert row["worst_kl"] == pytest.approx(kl.max(), rel=1e-3)
    assert row["top5_overlap"] == pytest.approx(overlap.mean())


def test_first_divergence_matches_a_plain_greedy_loop(
    report, perturbed, prompt, greedy_stream, ort_greedy_stream, max_new_tokens
):
    theirs = ort_greedy_stream(perturbed.path, prompt, max_new_tokens)
    expected = next(
        (i for i, (a, b) in enumerate(zip(greedy_stream, theirs, strict=True)) if a != b), None
    )
    assert expected is not None
    row = report.table.iloc[0]
    assert row["first_divergent_step"] == expected
    assert row["torch_token"] == greedy_stream[expected] and row["onnx_token"] == theirs[expected]
    div = report.divergences[0]
    assert div.reference_top[0].token_id == greedy_stream[expected]
    assert div.other_top[0].token_id == theirs[expected]
    assert row["torch_margin"] == pytest.approx(
        div.reference_top[0].logit - div.reference_top[1].logit, rel=1e-4
    )


def test_perplexity_and_summary_row(report, tiny_model, perturbed):
    torch_ppl, onnx_ppl = _perplexities(tiny_model, perturbed.path, TEXT)
    assert report.perplexity["torch"] == pytest.approx(torch_ppl, rel=1e-4)
    assert report.perplexity["onnx"] == pytest.approx(onnx_ppl, rel=1e-4)
    assert abs(onnx_ppl - torch_ppl) > 1e-3 * torch_ppl  # the perturbation shows
    per_prompt, total = report.table.iloc[:-1], report.table.iloc[-1]
    assert total["prompt"] == "all" and total["steps"] == per_prompt["steps"].sum()
    # equal steps per prompt: the overall agreement is the mean of the prompts'
    assert total["top1_agreement"] == pytest.approx(per_prompt["top1_agreement"].mean())
    assert total["worst_kl"] == per_prompt["worst_kl"].max()
    assert total["first_divergent_step"] == per_prompt["first_divergent_step"].min()
    assert report.summary["top1_agreement"] == total["top1_agreement"]
    assert "top-1 agreement" in str(report) and "first divergence at step" in str(report)


def test_good_export_agrees_everywhere(tiny_model, tiny_onnx, prompt):
    rep = diag.quantization_report(
        tiny_model, tiny_onnx, [prompt[0].tolist()], max_new_tokens=4, text=None
    )
    row = rep.table.iloc[0]
    assert row["top1_agreement"] == 1.0 and row["top5_overlap"] == 1.0 and row["mean_kl"] < 1e-8
    assert np.isnan(row["first_divergent_step"]) and rep.quantization is None


def test_plot(report):
    import matplotlib

    matplotlib.use("Agg")
    left, right = report.plot()
    assert len(left.patches) == 2 * 2  # two prompts, two bars each
    assert len(right.get_lines()) == 2


def test_folder_and_bad_input(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="holds 0 .onnx files"):
        resolve_onnx(str(tmp_path))
    (tmp_path / "decoder.onnx").write_bytes(b"")
    assert resolve_onnx(tmp_path) == str(tmp_path / "decoder.onnx")
    with pytest.raises(ValueError, match="give the tokenizer"):
        diag.quantization_report(tiny_model, "x.onnx", ["a string"])
    # checked before any session: the file does not exist
    with pytest.raises(TypeError, match="integer token ids, got dtype torch.float32"):
        diag.quantization_report(tiny_model, "x.onnx", [[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"token id -3 \(row 0, position 1\)"):
        diag.quantization_report(tiny_model, "x.onnx", torch.tensor([[1, -3]]))
    with pytest.raises(ValueError, match="the token ids of one prompt"):
        diag.quantization_report(tiny_model, "x.onnx", [torch.ones(2, 3, dtype=torch.long)])


def test_divergence_of_a_quantized_file_is_its_expected_error(
    tiny_model, perturbed, prompt, max_new_tokens
):
    # the same perturbed file, marked quantized in its metadata as diag's int4 exports
    # are: the divergence is told as quantization error, not as a broken export
    proto = onnx.load(perturbed.path)
    onnx.helper.set_model_props(proto, {"quantization": '{"bits": 4, "block_size": 32}'})
    path = perturbed.path.replace(".onnx", ".marked.onnx")
    onnx.save(proto, path)
    marked = diag.first_divergence(tiny_model, path, prompt, max_new_tokens=max_new_tokens)
    plain = diag.first_divergence(tiny_model, perturbed.path, prompt, max_new_tokens=max_new_tokens)
    assert marked.step == plain.step is not None
    assert "computes something different" in plain.verdict
    assert marked.verdict.startswith("expected int4 quantization error"), marked.verdict
