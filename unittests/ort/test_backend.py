"""OrtBackend and onnx_generate on a causal LM written by hand (see conftest), where
every token and every cache entry can be computed with numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from diag.generation import onnx_generate, open_steps
from diag.ort import OrtBackend, make_session, open_ort_backend


def _greedy_chain(table: np.ndarray, start: int, n: int) -> list[int]:
    tokens, tok = [], start
    for _ in range(n):
        tok = int(table[tok].argmax())
        tokens.append(tok)
    return tokens


@pytest.fixture(scope="module")
def lm(bigram_lm):
    model, table = bigram_lm(num_layers=2, vocab=16, heads=2, head_dim=4, seed=1)
    return model, table


@pytest.mark.parametrize("fast", [True, False], ids=["c-binding", "python-binding"])
def test_steps_chain_the_cache_without_copies(lm, fast):
    model, _ = lm
    backend = open_ort_backend(make_session(model))
    assert backend._runner.fast  # this onnxruntime has the internals of the fast path
    backend._runner.fast = fast  # False: the public IOBinding API, the fallback
    assert backend.vocab_size == 16
    kv = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "K"))
    ids = torch.tensor([[3, 5, 7], [1, 2, 4]])
    mask = torch.ones_like(ids)
    logits, past = backend.prefill(ids, mask, torch.arange(3).expand(2, 3))
    assert logits.shape == (2, 16) and logits.dtype == torch.float32
    assert past.length == 3 and len(past) == 4
    history = ids.clone()
    for step in range(4):
        nxt = logits.argmax(-1, keepdim=True)
        history = torch.cat([history, nxt], 1)
        previous = past
        mask = torch.ones_like(history)
        logits, past = backend.decode(nxt, mask, torch.full((2, 1), 3 + step), past)
        # the present OrtValues of a step are the past inputs of the next, as they are
        bound = backend.last_feeds["past_key_values.1.value"]
        assert bound is previous[3]
        assert past.length == 4 + step
    with pytest.raises(TypeError, match=r"past must be the OrtPast .* \(4 OrtValues\), got list"):
        backend.decode(nxt, mask, torch.full((2, 1), 7), list(past)[:2])
    # the cache holds K[token] for every position, in order
    expected = kv[history.numpy()].transpose(0, 2, 1, 3)
    for value in past.to_numpy():
        np.testing.assert_array_equal(value, expected)


def test_logits_are_a_view_on_the_cpu(lm):
    model, table = lm
    backend = open_ort_backend(make_session(model))
    logits, past = backend.prefill(
        torch.tensor([[4]]),
        torch.ones(1, 1, dtype=torch.long),
        torch.zeros(1, 1, dtype=torch.long),
    )
    np.testing.assert_array_equal(logits.numpy(), table[[4]])


def test_greedy_and_session_reuse(lm):
    model, table = lm
    ids = torch.tensor([[2, 9]])
    tokens, session, feeds = onnx_generate(model, ids, max_new_tokens=3, return_session=True)
    assert isinstance(session, OrtBackend)
    assert tokens[0, 2:].tolist() == _greedy_chain(table, 9, 3)
    # feeds replay the last step
    assert sorted(feeds)[:3] == ["attention_mask", "input_ids", "past_key_values.0.key"]
    assert feeds["past_key_values.0.key"].shape == (1, 2, 3, 4)
    replay = session.session.run(None, feeds)[0]
    np.testing.assert_array_equal(replay[0, -1], table[tokens[0, -2].item()])
    # the session is reused as it is, and a bare InferenceSession is accepted too
    assert open_steps(session).backend is session
    again = onnx_generate(session, ids, max_new_tokens=12)
    assert again[0, 2:].tolist() == _greedy_chain(table, 9, 12)
    bare = onnx_generate(session.session, ids.numpy(), max_new_tokens=12)
    assert torch.equal(bare, again)


def test_eos_streaming_and_result(lm):
    model, table = lm
    chain = _greedy_chain(table, 0, 10)
    eos = chain[2]
    stop = chain.index(eos)
    events = []
    res = onnx_generate(
        model,
        torch.tensor([[0]]),
        eos_token_id=eos,
        max_new_tokens=10,
        streamer=events.append,
        output_scores=True,
        return_result=True,
    )
    assert res.finish_reasons == ["stop"]
    assert res.num_generated_tokens == [stop + 1]
    assert res.sequences[0, 1:].tolist() == chain[: stop + 1]
    assert [e.token_ids.item() for e in events] == chain[: stop + 1]
    assert len(res.scores) == stop + 1
    np.testing.assert_array_equal(res.scores[0][0].numpy(), table[0])
    # stream=True gives the same steps as an iterator
    s = onnx_generate(model, torch.tensor([[0]]), eos_token_id=eos, max_new_tokens=10, stream=True)
    assert [e.token_ids.item() for e in s] == chain[: stop + 1]
    assert s.result.finish_reasons == ["stop"]


def test_seeded_sampling_is_reproducible(lm):
    model, _ = lm
    session = open_steps(model).backend
    kwargs = dict(max_new_tokens=20, do_sample=True, temperature=0.7, top_k=5, top_p=0.9)
    a = onnx_generate(
        session, torch.tensor([[1, 2]]), generator=torch.Generator().manual_seed(0), **kwargs
    )
    b = onnx_generate(
        session, torch.tensor([[1, 2]]), generator=torch.Generator().manual_seed(0), **kwargs
    )
    c = onnx_generate(
        session, torch.tensor([[1, 2]]), generator=torch.Generator().manual_seed(1), **kwargs
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"past_type": TensorProto.FLOAT16},
        {"ids_type": TensorProto.INT32},
        {"with_position_ids": False},
    ],
)
def test_variants_of_the_contract(bigram_lm, kwargs):
    model, table = bigram_lm(seed=2, **kwargs)
    tokens = onnx_generate(model, torch.tensor([[5]]), max_new_tokens=6)
    assert tokens[0, 1:].tolist() == _greedy_chain(table, 5, 6)


def test_bad_arguments(lm):
    model, _ = lm
    with pytest.raises(TypeError, match="pass eos_token_id=2 by keyword"):
        onnx_generate(model, torch.tensor([[1]]), 2, max_new_tokens=2)
    with pytest.raises(TypeError, match="diag.generate"):
        onnx_generate(torch.nn.Linear(2, 2), torch.tensor([[1]]))
    with pytest.raises(TypeError, match="return_session=True"):
        onnx_generate(object(), torch.tensor([[1]]))
    with pytest.raises(TypeError, match="InferenceSession"):
        OrtBackend("model.onnx", None)  # a path: open_ort_backend opens it
    with pytest.raises(ValueError, match="not both"):
        onnx_generate(model, torch.tensor([[1]]), stream=True, streamer=print)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        onnx_generate(model, torch.tensor([[1]]), eos_token_id=99)
