"""The one generation run: both public functions take the same keywords, typed as the
DecodingOptions fields, and run the same call (prompt, options, streaming, result)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import diag
from diag.generation import (
    UNSET,
    DecodingOptions,
    TorchBackend,
    open_steps,
    resolve_options,
    run_generation,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _keywords(function) -> list[inspect.Parameter]:
    params = inspect.signature(function).parameters.values()
    return [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def test_both_fronts_list_the_same_keywords():
    fields = {f.name: f for f in dataclasses.fields(DecodingOptions)}
    torch_side = _keywords(diag.generate)
    onnx_side = _keywords(diag.onnx_generate)
    shared = torch_side
    options = [p for p in shared if p.name in fields]
    assert options and options == shared[: len(options)]
    for param in options:
        assert param.default is UNSET and param.annotation == fields[param.name].type
    assert [p.name for p in shared[len(options) :]] == [
        "generator",
        "streamer",
        "generation_config",
        "tokenizer",
        "return_result",
        "stream",
    ]
    # onnx_generate's own keywords first (session), then exactly the same shared ones
    assert onnx_side[-len(shared) :] == shared
    assert [p.name for p in onnx_side[: -len(shared)]] == [
        "return_session",
        "providers",
        "session_options",
        "vocab_size",
        "layout",
    ]
    for function in (diag.generate, diag.onnx_generate):
        last = list(inspect.signature(function).parameters.values())[-1]
        assert last.kind is inspect.Parameter.VAR_KEYWORD and last.name == "kwargs"


def test_a_misspelt_keyword_is_refused_by_both_fronts(tiny_model):
    model = tiny_model("llama")
    with pytest.raises(TypeError, match=r"unknown decoding option\(s\) \['max_new_token'\]"):
        diag.generate(model, torch.tensor([[5, 6]]), max_new_token=3)


def test_run_generation_is_what_generate_runs(tiny_model, random_prompt):
    model = tiny_model("llama")
    ids = random_prompt(6, seed=1)
    steps = open_steps(model)
    options = resolve_options(None, steps.defaults, max_new_tokens=5)
    direct = run_generation(steps, ids, None, options)
    assert torch.equal(direct, diag.generate(model, ids, max_new_tokens=5))
    assert torch.equal(direct, model.generate(ids, max_new_tokens=5))
    assert TorchBackend(model).input_device == model.device


def test_given_options_pass_on_what_was_set_only(tiny_model):
    config = tiny_model("llama").generation_config
    opts = resolve_options({"top_k": 7}, config, max_new_tokens=5, do_sample=True, top_p=None)
    assert opts.given() == {"max_new_tokens": 5, "do_sample": True, "top_p": None}
    assert "top_k" in opts.defaults_used and opts.top_k == 7
    # resolving what was given against the same layers gives the same options back
    again = resolve_options({"top_k": 7}, config, **opts.given())
    assert again == opts and again.given() == opts.given()
    assert dataclasses.replace(opts, max_new_tokens=2).given()["max_new_tokens"] == 2


def test_a_plain_callback_gets_the_text_with_a_tokenizer():
    model, tokenizer = diag.load_pretrained("tiny:llama", progress=False)
    events = []
    res = diag.generate(
        model,
        "Hello world",
        tokenizer=tokenizer,
        max_new_tokens=6,
        eos_token_id=None,
        streamer=events.append,
        return_result=True,
    )
    assert [e.step for e in events] == list(range(6))
    streamed = "".join(e.text[0] for e in events)
    whole = res.texts(tokenizer)[0]
    # held-back bytes of an incomplete character come with a later token, or not at all
    assert whole.startswith(streamed) and len(streamed) >= len(whole) - 4
    stream = diag.generate(
        model, "Hello world", tokenizer=tokenizer, max_new_tokens=6, eos_token_id=None, stream=True
    )
    assert [e.text for e in stream] == [e.text for e in events]
    assert torch.equal(stream.result.sequences, res.sequences)
