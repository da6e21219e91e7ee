"""onnx_generate takes its defaults from the generation config in the ONNX file's
metadata as model.generate takes them from model.generation_config, and an option
given as None means what it means to model.generate: onnx_generate against
model.generate on a tiny model exported with a generation config that sets them."""

from __future__ import annotations

import onnx_ir as ir
import pytest
import torch

from diag.export import export_causal_lm
from diag.export.make.save import save_model_atomic
from diag.export.plan.generation_config import generation_config_json, write_generation_config
from diag.generation import UNSET, onnx_generate, open_steps
from diag.models import get_untrained_model_with_inputs

PROMPT_LENGTH = 6
PAD = 7


def _prompt(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 1000, (1, PROMPT_LENGTH), generator=g)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(model, session, eos)``: the tiny llama whose generation config stops on the
    token greedy decoding emits 5th, generates 3 tokens, samples with top_k=3 and
    temperature=0.3 and pads with 7, and a session over its export (which keeps that
    config in its metadata).

    The graph is the suite's export of the tiny llama (cached) with that config written
    in its metadata as the export writes it: another export would only differ there
    (the export's own writing is unittests/export/record/test_generation_config.py's)."""
    model = get_untrained_model_with_inputs("llama")["model"]
    graph = ir.load(export_causal_lm(model, verify=False).filename)
    row = model.generate(_prompt(1), max_new_tokens=5, do_sample=False)[0, PROMPT_LENGTH:]
    assert int(row[4]) not in row[:4].tolist()
    config = model.generation_config
    config.eos_token_id, config.pad_token_id = int(row[4]), PAD
    config.max_new_tokens, config.top_k, config.temperature = 3, 3, 0.3
    write_generation_config(graph, generation_config_json(model))
    path = tmp_path_factory.mktemp("explicit-none") / "model.onnx"
    save_model_atomic(graph, path)
    return model, open_steps(str(path)).backend, int(row[4])


def _both(model, session, ids, seed: int = 0, **kwargs):
    """(model.generate, onnx_generate) with the same global seed; onnx_generate gets no
    generation_config: its defaults come from the metadata."""
    torch.manual_seed(seed)
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    torch.manual_seed(seed)
    return expected, onnx_generate(session, ids, **kwargs)


@pytest.mark.parametrize(
    "option, call",
    [
        ("eos_token_id", dict(max_new_tokens=12)),  # None: past the eos, 12 tokens
        ("max_new_tokens", {}),  # None: 20 new tokens at most, so up to the eos
        ("top_k", dict(do_sample=True, max_new_tokens=10)),  # None: no top-k
        ("temperature", dict(do_sample=True, max_new_tokens=10)),  # None: 1.0
    ],
)
def test_none_like_model_generate(exported, option, call):
    model, session, _ = exported
    ids = _prompt(1)
    expected, got = _both(model, session, ids, **call, **{option: None})
    assert torch.equal(got, expected), option
    unset_expected, unset_got = _both(model, session, ids, **call)
    assert torch.equal(unset_got, unset_expected), option
    assert not torch.equal(got, unset_got), f"{option}=None changed nothing"
    torch.manual_seed(0)
    assert torch.equal(onnx_generate(session, ids, **call, **{option: UNSET}), unset_got)


def test_eos_none_generates_past_the_metadata_eos(exported):
    # the case: stop (the metadata's eos, as model.generate) vs not stop (None)
    model, session, eos = exported
    ids = _prompt(1)
    stopped = onnx_generate(session, ids, max_new_tokens=12, return_result=True)
    assert stopped.finish_reasons == ["stop"] and stopped.num_generated_tokens == [5]
    assert stopped.new_tokens[0, 4].item() == eos
    free = onnx_generate(session, ids, max_new_tokens=12, eos_token_id=None, return_result=True)
    assert free.finish_reasons == ["length"] and free.num_generated_tokens == [12]
    expected = model.generate(ids, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(free.sequences, expected)


def test_pad_none_pads_with_the_eos(exported):
    model, session, eos = exported
    ids = torch.cat([_prompt(1), _prompt(2)])  # row 0 stops on the eos after 5 tokens
    expected, got = _both(model, session, ids, max_new_tokens=10, pad_token_id=None)
    assert torch.equal(got, expected)
    assert got[0, PROMPT_LENGTH + 5 :].tolist() == [eos] * 5
    _, unset = _both(model, session, ids, max_new_tokens=10)
    assert unset[0, PROMPT_LENGTH + 5 :].tolist() == [PAD] * 5


def test_none_that_model_generate_rejects(exported):
    model, session, _ = exported
    ids = _prompt(1)
    with pytest.raises((TypeError, ValueError)):
        model.generate(ids, num_return_sequences=None)
    with pytest.raises(ValueError, match="num_return_sequences=None is rejected"):
        onnx_generate(session, ids, num_return_sequences=None)
