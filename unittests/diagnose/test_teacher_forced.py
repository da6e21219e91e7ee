from __future__ import annotations

import pytest
import torch

from diag.diagnose import compare_teacher_forced
from diag.export.check.tolerance import default_atol


def test_good_export_agrees(tiny_model, tiny_onnx, greedy_stream, prompt, max_new_tokens):
    df = compare_teacher_forced(tiny_model, tiny_onnx, prompt, max_new_tokens=max_new_tokens)
    assert len(df) == max_new_tokens
    assert df["step"].tolist() == list(range(max_new_tokens))
    # tokens=None forces torch's greedy continuation: transformers' generate agrees
    assert df["token"].tolist() == greedy_stream
    assert df["position"].tolist() == list(range(prompt.shape[1], prompt.shape[1] + max_new_tokens))
    # torch against ONNX Runtime: export validation's float32 tolerance (a tiny model's
    # float32 noise, |float32 - float64|, stays orders of magnitude below it)
    assert df["max_abs_diff"].max() < default_atol(torch.float32)
    assert df["argmax_agree"].all()
    assert (df["top5_overlap"] == 1.0).all()
    assert df["kl_div"].max() < 1e-8
    assert df.attrs == {"top_k": 5, "prompt_length": prompt.shape[1]}


def test_broken_layer_differs_from_the_first_step(tiny_model, broken_layer, prompt):
    df = compare_teacher_forced(tiny_model, broken_layer.path, prompt, max_new_tokens=6)
    assert broken_layer.first_bad_step == 0
    assert (df["max_abs_diff"] > 1e-2).all(), df
    assert (df["kl_div"] > 1e-6).all(), df


def test_broken_embedding_row_differs_from_the_right_step(
    tiny_model, broken_embedding, prompt, max_new_tokens
):
    df = compare_teacher_forced(
        tiny_model, broken_embedding.path, prompt, max_new_tokens=max_new_tokens
    )
    k = broken_embedding.first_bad_step
    assert 0 < k < max_new_tokens
    before, after = df[df["step"] < k], df[df["step"] >= k]
    assert before["max_abs_diff"].max() < default_atol(torch.float32), df
    assert before["argmax_agree"].all()
    # the perturbed token is the one fed right before step k
    assert df.loc[df["step"] == k - 1, "token"].item() == broken_embedding.token
    first_bad = int(df.loc[df["max_abs_diff"] > 1e-3, "step"].min())
    assert first_bad == k, df
    assert after["max_abs_diff"].iloc[0] > 1e-2


def test_forced_tokens_and_batch_with_padding(tiny_model, tiny_onnx):
    ids = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    forced = [7, 8, 9]
    df = compare_teacher_forced(tiny_model, tiny_onnx, ids, mask, tokens=forced, top_k=3)
    assert len(df) == 3 * 2
    assert df["batch"].tolist() == [0, 1] * 3
    assert df["token"].tolist() == [7, 7, 8, 8, 9, 9]
    # positions follow the mask: row 0 has 3 real tokens, row 1 has 5
    assert df[df["batch"] == 0]["position"].tolist() == [3, 4, 5]
    assert df[df["batch"] == 1]["position"].tolist() == [5, 6, 7]
    assert "top3_overlap" in df.columns
    assert df["max_abs_diff"].max() < default_atol(torch.float32)
    # the padded row sees exactly what it would see alone
    alone = compare_teacher_forced(tiny_model, tiny_onnx, ids[:1, 2:], tokens=forced, top_k=3)
    row0 = df[df["batch"] == 0].reset_index(drop=True)
    assert row0["torch_argmax"].tolist() == alone["torch_argmax"].tolist()


def test_accepts_a_session_and_the_text_of_tokens(tiny_model, tiny_onnx, prompt):
    import onnxruntime as ort

    class Tok:
        def batch_decode(self, rows):
            return [f"<{r[0]}>" for r in rows]

    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    df = compare_teacher_forced(
        tiny_model, sess, prompt, tokens=torch.tensor([[3, 4]]), tokenizer=Tok()
    )
    assert df["text"].tolist() == ["<3>", "<4>"]
    assert df["argmax_agree"].all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tokens=torch.tensor([[1, 2]] * 3)), ValueError, "batch=1"),
        (dict(tokens=torch.tensor([1.0, 2.0])), TypeError, "integer"),
        (dict(tokens=[]), ValueError, "empty"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
        (dict(top_k=0), ValueError, "top_k"),
        # the vocabulary of the tiny models: 49152 tokens
        (dict(tokens=torch.tensor([3, 49152])), ValueError, r"^tokens holds the token id 49152"),
        (dict(tokens=torch.tensor([[3, -1]])), ValueError, r"^tokens holds the token id -1"),
    ],
)
def test_bad_arguments(tiny_model, tiny_onnx, kwargs, error, match, prompt):
    with pytest.raises(error, match=match):
        compare_teacher_forced(tiny_model, tiny_onnx, prompt, **kwargs)


def test_bad_onnx_argument(tiny_model, prompt):
    with pytest.raises(TypeError, match="InferenceSession"):
        compare_teacher_forced(tiny_model, 42, prompt, max_new_tokens=2)


def test_prompt_beyond_the_vocabulary(tiny_model, tiny_onnx):
    with pytest.raises(ValueError, match=r"^input_ids holds the token id 49152 .*\[0, 49152\)"):
        compare_teacher_forced(tiny_model, tiny_onnx, torch.tensor([[1, 49152]]), max_new_tokens=1)
