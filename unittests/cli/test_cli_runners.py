"""The runners of the command line pass only the decoding options the user gave: the
model's generation config decides the others, for model.generate and diag.generate
alike."""

from __future__ import annotations

import copy

import pytest
import torch

from diag.cli.args import given_decoding_options
from diag.cli.loading import encode_prompts, load_model
from diag.cli.main import build_parser
from diag.cli.runners import cut_after_eos, decoding_options, make_runner
from diag.generation import DecodingOptions, GenerateResult
from diag.models import get_untrained_model_with_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW_TOKENS = 8
SEED = 5


@pytest.fixture(scope="module")
def sampling_model():
    """The tiny llama with a generation config that samples with top_k=3."""
    model = get_untrained_model_with_inputs("llama")["model"]
    model.generation_config = copy.deepcopy(model.generation_config)
    model.generation_config.do_sample = True
    model.generation_config.top_k = 3
    return model


@pytest.fixture(scope="module")
def tokenizer():
    """The tokenizer the command line pairs with the tiny models (eos = pad = 2, as in
    their generation config)."""
    return load_model("tiny:llama")[1]


def _options(model, tokenizer, *argv: str) -> DecodingOptions:
    args = build_parser().parse_args(["generate", "-p", "x", *argv])
    return decoding_options(model, tokenizer, NEW_TOKENS, **given_decoding_options(args))


def _prompt() -> torch.Tensor:
    return torch.randint(3, 1000, (1, 6), generator=torch.Generator().manual_seed(0))


def _reference(model, **kwargs) -> list[int]:
    torch.manual_seed(SEED)
    out = model.generate(_prompt(), max_new_tokens=NEW_TOKENS, **kwargs)
    return cut_after_eos(out[0, 6:].tolist(), [2])


def test_options_given_are_only_what_was_given(sampling_model, tokenizer):
    options = _options(sampling_model, tokenizer, "--top-k", "7", "--seed", str(SEED))
    given = {"max_new_tokens": NEW_TOKENS, "eos_token_id": [2], "pad_token_id": 2, "top_k": 7}
    assert options.given() == given
    # the others are the model's: it samples (with the top_k given)
    assert options.do_sample is True and options.top_k == 7
    assert _options(sampling_model, tokenizer).top_k == 3


@pytest.mark.parametrize("backend", ["hf", "torch"])
def test_an_option_not_given_takes_the_models_default(sampling_model, tokenizer, backend):
    runner = make_runner(backend, sampling_model)
    ids = _prompt()
    mask = torch.ones_like(ids)

    def run(*argv: str) -> list[int]:
        result, seconds = runner(ids, mask, _options(sampling_model, tokenizer, *argv), SEED)
        assert isinstance(result, GenerateResult) and seconds > 0
        return result.generated()[0]

    # nothing given: the model samples with its top_k=3
    sampled = run()
    assert sampled == _reference(sampling_model)
    assert sampled != _reference(sampling_model, do_sample=False)
    # given: the command line wins
    assert run("--no-do-sample") == _reference(sampling_model, do_sample=False)
    wide = run("--top-k", "0")
    assert wide == _reference(sampling_model, top_k=0)
    assert wide != sampled


def test_hf_result_reads_like_diag_result(tokenizer):
    """model.generate's output as a GenerateResult: the same fields as diag.generate's,
    logits included, on a left-padded batch."""
    model = get_untrained_model_with_inputs("llama")["model"]
    ids, mask = encode_prompts(tokenizer, ["def f(x):", "Hello world, a longer prompt"])
    options = decoding_options(model, tokenizer, 6, do_sample=False, output_logits=True)
    hf, _ = make_runner("hf", model)(ids, mask, options)
    ours, _ = make_runner("torch", model)(ids, mask, options)
    assert hf.generated() == ours.generated()
    assert hf.num_generated_tokens == ours.num_generated_tokens
    assert hf.finish_reasons == ours.finish_reasons and hf.num_prompt_tokens == ids.shape[1]
    assert len(hf.logits) == len(ours.logits) == max(ours.num_generated_tokens)
    for theirs, mine in zip(hf.logits, ours.logits, strict=True):
        torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["hf", "torch"])
def test_several_sequences_on_a_greedy_model_fail_like_model_generate(tokenizer, backend):
    # without --do-sample the model's config decides; this one is greedy: both refuse
    model = get_untrained_model_with_inputs("llama")["model"]
    ids = _prompt()
    options = _options(model, tokenizer, "--num-return-sequences", "2")
    with pytest.raises(ValueError, match="num_return_sequences"):
        make_runner(backend, model)(ids, torch.ones_like(ids), options)
