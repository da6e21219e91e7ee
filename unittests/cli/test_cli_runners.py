"""The runners of the command line pass only the decoding options the user gave: the
model's generation config decides the others, for model.generate and diag.generate
alike."""

from __future__ import annotations

import copy

import pytest
import torch

from diag.cli.args import given_decoding_options
from diag.cli.main import build_parser
from diag.cli.runners import DecodingArgs, make_runner
from diag.generation import UNSET
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


def _options(*argv: str) -> DecodingArgs:
    args = build_parser().parse_args(["generate", "-p", "x", *argv])
    return DecodingArgs(
        max_new_tokens=NEW_TOKENS, seed=args.seed, **given_decoding_options(args)
    )


def _prompt() -> torch.Tensor:
    return torch.randint(3, 1000, (1, 6), generator=torch.Generator().manual_seed(0))


def _reference(model, **kwargs) -> list[int]:
    torch.manual_seed(SEED)
    out = model.generate(_prompt(), max_new_tokens=NEW_TOKENS, **kwargs)
    return out[0, 6:].tolist()


def test_kwargs_hold_only_what_was_given():
    assert DecodingArgs(max_new_tokens=4).kwargs() == {"max_new_tokens": 4}
    options = _options("--top-k", "7", "--seed", str(SEED))
    assert options.kwargs() == {"max_new_tokens": NEW_TOKENS, "top_k": 7}
    assert options.do_sample is UNSET and options.seed == SEED
    given = DecodingArgs(max_new_tokens=4, eos_token_id=[2], pad_token_id=0).kwargs()
    assert given == {"max_new_tokens": 4, "eos_token_id": [2], "pad_token_id": 0}


@pytest.mark.parametrize("backend", ["hf", "torch"])
def test_an_option_not_given_takes_the_models_default(sampling_model, backend):
    runner = make_runner(backend, sampling_model)
    ids = _prompt()
    # nothing given: the model samples with its top_k=3
    sampled = runner(ids, torch.ones_like(ids), _options("--seed", str(SEED)))
    assert sampled.new_tokens[0] == _reference(sampling_model)
    assert sampled.new_tokens[0] != _reference(sampling_model, do_sample=False)
    # given: the command line wins
    greedy = runner(ids, torch.ones_like(ids), _options("--no-do-sample"))
    assert greedy.new_tokens[0] == _reference(sampling_model, do_sample=False)
    wide = runner(ids, torch.ones_like(ids), _options("--top-k", "0", "--seed", str(SEED)))
    assert wide.new_tokens[0] == _reference(sampling_model, top_k=0)
    assert wide.new_tokens[0] != sampled.new_tokens[0]


@pytest.mark.parametrize("backend", ["hf", "torch"])
def test_several_sequences_on_a_greedy_model_fail_like_model_generate(backend):
    # without --do-sample the model's config decides; this one is greedy: both refuse
    model = get_untrained_model_with_inputs("llama")["model"]
    ids = _prompt()
    options = _options("--num-return-sequences", "2")
    with pytest.raises(ValueError, match="num_return_sequences"):
        make_runner(backend, model)(ids, torch.ones_like(ids), options)
