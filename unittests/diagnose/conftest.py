"""Fixtures of the diagnosis tests: a tiny 4-layer llama, its export, and deliberately
broken copies of the export.

* ``broken_layer``: one MLP weight of decoder layer 1 perturbed; every step and every
  layer from 1 on differ.
* ``broken_embedding``: the embedding row of one token that the greedy continuation
  produces at step ``k`` (and never before, nor in the prompt) scaled up: the logits
  agree until that token is read, i.e. steps ``0 .. k``, and differ from step ``k + 1``.

The broken files are written by editing the initializers of the good export, the way
a bad conversion or a corrupted weight file would look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from diag.testing.perturb import module_weight, perturb_weight

PROMPT = torch.tensor([[5, 17, 256, 1024, 4000, 77, 9]])
N_LAYERS = 4
BROKEN_LAYER = 1
MAX_NEW_TOKENS = 10


@dataclass
class Broken:
    path: str
    #: first step whose logits differ (teacher forcing along the torch greedy stream)
    first_bad_step: int
    #: the token whose embedding row was changed (None for a layer weight)
    token: int | None = None


def _save(proto: onnx.ModelProto, path: str) -> str:
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    from diag.models.untrained import get_tiny_config, make_untrained_model

    config = get_tiny_config("llama")
    config.num_hidden_layers = N_LAYERS
    return make_untrained_model(config, seed=0)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> str:
    import diag

    path = str(tmp_path_factory.mktemp("diagnose") / "tiny_llama4.onnx")
    # verify=False: these tests measure the agreement themselves
    return diag.export_causal_lm(tiny_model, path, verify=False).filename


@pytest.fixture(scope="session")
def greedy_stream(tiny_model) -> list[int]:
    """transformers' own greedy continuation of PROMPT (independent of diag's loop)."""
    out = tiny_model.generate(
        PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    return out[0, PROMPT.shape[1] :].tolist()


@pytest.fixture(scope="session")
def broken_layer(tiny_onnx) -> Broken:
    proto = onnx.load(tiny_onnx)
    perturb_weight(proto, f"layers.{BROKEN_LAYER}.mlp.down_proj", scale=0.2)
    return Broken(_save(proto, tiny_onnx.replace(".onnx", ".broken_layer.onnx")), first_bad_step=0)


@pytest.fixture(scope="session")
def broken_embedding(tiny_onnx, greedy_stream) -> Broken:
    prompt = set(PROMPT[0].tolist())
    k = next(
        i
        for i, t in enumerate(greedy_stream)
        if i >= 2 and t not in prompt and t not in greedy_stream[:i]
    )
    token = greedy_stream[k]
    return Broken(scale_embedding(tiny_onnx, token), first_bad_step=k + 1, token=token)


def scale_embedding(path: str, token: int) -> str:
    """A copy of the export ``path`` whose embedding row of ``token`` is scaled up: its
    logits differ from the step that reads ``token`` on."""
    proto = onnx.load(path)
    init = module_weight(proto, "embed_tokens", ("Gather",))
    table = numpy_helper.to_array(init).copy()
    table[token] *= 200.0
    init.CopyFrom(numpy_helper.from_array(table, init.name))
    return _save(proto, path.replace(".onnx", f".broken_embedding_{token}.onnx"))


@pytest.fixture(scope="session")
def embedding_scaled():
    """:func:`scale_embedding` (test modules cannot import conftest)."""
    return scale_embedding


def ort_greedy(path: str, prompt: torch.Tensor, max_new_tokens: int) -> list[int]:
    """A plain greedy loop over an ONNX Runtime session (numpy feeds, no diag code)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    past_inputs = [i for i in sess.get_inputs() if i.name.startswith("past_key_values")]
    ids = prompt.numpy().astype(np.int64)
    length = ids.shape[1]
    past = [np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32) for i in past_inputs]
    tokens: list[int] = []
    feed_ids, positions = ids, np.arange(length, dtype=np.int64)[None]
    for _ in range(max_new_tokens):
        feeds = {"input_ids": feed_ids, "attention_mask": np.ones((1, length), dtype=np.int64)}
        if "position_ids" in names:
            feeds["position_ids"] = positions
        if "logits_to_keep" in names:
            # the last position's logits only
            feeds["logits_to_keep"] = np.array([feed_ids.shape[1] - 1], dtype=np.int64)
        feeds.update({i.name: p for i, p in zip(past_inputs, past, strict=True)})
        out = sess.run(None, feeds)
        token = int(out[0][0, -1].argmax())
        tokens.append(token)
        past = out[1:]
        feed_ids = np.array([[token]], dtype=np.int64)
        positions = np.array([[length]], dtype=np.int64)
        length += 1
    return tokens


@pytest.fixture(scope="session")
def ort_greedy_stream():
    """The plain ONNX Runtime greedy loop, as a fixture (test modules cannot import conftest)."""
    return ort_greedy


@pytest.fixture(scope="session")
def prompt() -> torch.Tensor:
    return PROMPT.clone()


@pytest.fixture(scope="session")
def max_new_tokens() -> int:
    return MAX_NEW_TOKENS
