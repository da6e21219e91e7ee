"""The one generation front: both public functions take the same keywords, declared once,
and run the same call (prompt, options, streaming, result)."""

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
    generation_front,
    resolve_options,
    run_generation,
)
from diag.generation.front import NAMED_OPTIONS, shared_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _keywords(function) -> list[inspect.Parameter]:
    params = inspect.signature(function).parameters.values()
    return [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def test_both_fronts_list_the_shared_keywords_once_declared():
    shared = shared_parameters()
    fields = {f.name: f for f in dataclasses.fields(DecodingOptions)}
    assert set(NAMED_OPTIONS) <= set(fields)
    for param in shared[: len(NAMED_OPTIONS)]:
        assert param.default is UNSET and param.annotation == fields[param.name].type
    torch_side = _keywords(diag.generate)
    onnx_side = _keywords(diag.onnx_generate)
    assert torch_side == shared
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


def test_generation_front_refuses_a_second_declaration():
    with pytest.raises(TypeError, match=r"declares \['top_k'\], which generation_front adds"):

        @generation_front
        def twice(model, input_ids, *, top_k=None, **options):
            return None

    with pytest.raises(TypeError, match="must end with \\*\\*options"):

        @generation_front
        def closed(model, input_ids):
            return None


def test_a_misspelt_keyword_is_refused_by_both_fronts(tiny_model):
    model = tiny_model("llama")
    with pytest.raises(TypeError, match=r"unknown decoding option\(s\) \['max_new_token'\]"):
        diag.generate(model, torch.tensor([[5, 6]]), max_new_token=3)


def test_run_generation_is_what_generate_runs(tiny_model, random_prompt):
    model = tiny_model("llama")
    ids = random_prompt(6, seed=1)
    direct = run_generation(
        TorchBackend(model), ids, None, model.generation_config, max_new_tokens=5
    )
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
