"""diag.generate against model.generate on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest
import torch

from diag.generation import StepEvent, TextDeltas, generate, prepare_prompt, stream

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CODE = "def fibonacci(n):"
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a Python function that returns the square of a number."}],
    [{"role": "user", "content": "Hi"}],
]


def test_greedy_equals_model_generate(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer(CODE, return_tensors="pt").input_ids
    got = generate(model, ids, max_new_tokens=50)
    assert got.shape == (1, ids.shape[1] + 50)
    assert torch.equal(got, model.generate(ids, max_new_tokens=50))
    assert "return" in tokenizer.decode(got[0, ids.shape[1] :])


@pytest.mark.parametrize(
    "knobs",
    [
        dict(),  # transformers' sampling defaults (top_k=50)
        dict(temperature=0.6, top_k=0),
        dict(top_k=10),
        dict(top_p=0.85, top_k=0),
        dict(repetition_penalty=1.3, top_k=0),
        dict(temperature=1.2, top_k=30, top_p=0.9, repetition_penalty=1.1),
    ],
    ids=["default", "temperature", "top_k", "top_p", "repetition_penalty", "combined"],
)
def test_seeded_sampling_equals_model_generate(smollm2, knobs):
    model, tokenizer = smollm2
    ids = tokenizer(CODE, return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=20, do_sample=True, **knobs)
    torch.manual_seed(7)
    expected = model.generate(ids, **kwargs)
    torch.manual_seed(7)
    assert torch.equal(generate(model, ids, **kwargs), expected)


def test_chat_batch_equals_each_prompt_alone_with_eos(smollm2):
    model, tokenizer = smollm2
    ids, mask = prepare_prompt(CHATS, None, tokenizer)
    lengths = mask.sum(dim=1).tolist()
    assert len(set(lengths)) == 3, "the prompts must have different lengths"
    assert (mask[:, 0] == 0).any() and (mask[:, -1] == 1).all()  # left padding

    res = generate(model, CHATS, tokenizer=tokenizer, max_new_tokens=30, return_result=True)
    assert torch.equal(res.sequences, model.generate(ids, attention_mask=mask, max_new_tokens=30))
    # the short answers end on <|im_end|>, the code answer runs out of tokens
    assert res.finish_reasons == ["stop", "length", "stop"]
    assert res.num_generated_tokens[1] == 30
    for i, chat in enumerate(CHATS):
        alone = generate(model, chat, tokenizer=tokenizer, max_new_tokens=30, return_result=True)
        n = alone.num_generated_tokens[0]
        assert alone.finish_reasons[0] == res.finish_reasons[i]
        assert n == res.num_generated_tokens[i]
        assert torch.equal(alone.new_tokens[0, :n], res.new_tokens[i, :n])
        # after eos, the row holds the pad id
        assert set(res.new_tokens[i, n:].tolist()) <= {tokenizer.pad_token_id}
    assert "Paris" in res.texts(tokenizer)[0]


def test_text_prompt_and_streamed_text(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer(CODE, return_tensors="pt").input_ids
    plain = generate(model, CODE, tokenizer=tokenizer, max_new_tokens=25, return_result=True)
    assert torch.equal(plain.sequences, model.generate(ids, max_new_tokens=25))

    s = stream(model, CODE, tokenizer=tokenizer, max_new_tokens=25)
    events = list(s)
    assert torch.equal(torch.stack([e.token_ids for e in events], dim=1), plain.new_tokens)
    streamed_text = "".join(e.text[0] for e in events)
    assert streamed_text == plain.texts(tokenizer)[0]
    assert torch.equal(s.result.sequences, plain.sequences)


def test_text_deltas_hold_back_incomplete_characters(smollm2):
    _, tokenizer = smollm2
    text = "caf\u00e9 \U0001f389 na\u00efve \u6f22\u5b57 done"
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    assert len(tokens) > len(text.split())  # some characters span several tokens
    deltas = TextDeltas(tokenizer)
    pieces = []
    for step, token in enumerate(tokens):
        event = StepEvent(
            step=step,
            token_ids=torch.tensor([token, 0]),
            active=torch.tensor([True, False]),
            finished=torch.tensor([False, False]),
        )
        delta = deltas.push(event)
        assert delta[1] == ""  # an inactive row gets no text
        assert "\ufffd" not in delta[0]
        pieces.append(delta[0])
    pieces.extend(deltas.flush()[:1])
    assert "".join(pieces) == tokenizer.decode(tokens)


def test_eos_none_generates_past_the_eos_like_model_generate(smollm2):
    # the case: model.generate(eos_token_id=None) ran to max_new_tokens while
    # diag.generate stopped on the model's eos (40 vs 30 new tokens)
    model, tokenizer = smollm2
    ids, mask = prepare_prompt(CHATS[0], None, tokenizer)
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=40, eos_token_id=None)
    res = generate(model, ids, mask, max_new_tokens=40, eos_token_id=None, return_result=True)
    assert torch.equal(res.sequences, expected)
    assert res.num_generated_tokens == [40] and res.finish_reasons == ["length"]
    # left out, the model's eos stops both
    stopped = generate(model, ids, mask, max_new_tokens=40, return_result=True)
    assert stopped.finish_reasons == ["stop"] and stopped.num_generated_tokens[0] < 40
    assert torch.equal(
        stopped.sequences, model.generate(ids, attention_mask=mask, max_new_tokens=40)
    )
