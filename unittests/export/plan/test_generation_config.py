"""export_causal_lm writes the model's generation config into the ONNX metadata and
onnx_generate decodes with it: the model's eos and pad token without being told."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from transformers import GenerationConfig

from diag.contract import GENERATION_CONFIG_METADATA, metadata_generation_config
from diag.export import export_causal_lm
from diag.export.plan.export_key import export_key
from diag.export.plan.generation_config import generation_config_json
from diag.generation import onnx_generate, open_steps
from diag.models import get_untrained_model_with_inputs
from unittests.conftest import left_padded_prompts

MAX_NEW = 8
PAD = 7


def _metadata(filename: str) -> dict[str, str]:
    proto = onnx.load(filename, load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_prompts(6, (0, 2), high=1000, seed=1, low=10, pad_id=PAD)


def _pick_eos(new: torch.Tensor) -> tuple[int, int]:
    """A token greedy decoding gives row 0 at some step k >= 2, never before on row 0
    and never on row 1: with it as eos, row 0 stops at k and row 1 runs to the end."""
    for k in range(2, new.shape[1] - 1):
        token = int(new[0, k])
        if token not in new[0, :k].tolist() and token not in new[1].tolist() and token != PAD:
            return k, token
    raise AssertionError(f"no usable eos in the greedy tokens {new.tolist()}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny llama whose eos is a token it generates at step k, its pad another token,
    exported: ``(model, filename, k, eos, tokens generated with no eos)``."""
    model = get_untrained_model_with_inputs("llama")["model"]
    ids, mask = _prompts()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD
    with torch.no_grad():
        free = model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False)
    k, eos = _pick_eos(free[:, ids.shape[1] :])
    model.generation_config.eos_token_id = eos
    result = export_causal_lm(model, tmp_path_factory.mktemp("meta") / "model.onnx", verify=False)
    return model, result.filename, k, eos, free


def test_generation_config_in_metadata(exported):
    model, filename, _, eos, _ = exported
    text = _metadata(filename)[GENERATION_CONFIG_METADATA]
    content = json.loads(text)
    assert content["eos_token_id"] == eos and content["pad_token_id"] == PAD
    assert content["bos_token_id"] == model.generation_config.bos_token_id == 1
    assert GenerationConfig(**content) == model.generation_config
    assert metadata_generation_config(open_steps(filename).backend.session) == content


def test_onnx_generate_stops_at_the_model_eos(exported):
    model, filename, k, eos, free = exported
    ids, mask = _prompts()
    with torch.no_grad():
        expected = model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW)
    new = expected[:, ids.shape[1] :]
    # the case matters: row 0 stops at step k and is padded, row 1 runs to the end
    assert new[0, k] == eos and new[0, k + 1 :].tolist() == [PAD] * (MAX_NEW - k - 1)
    assert new.shape[1] == MAX_NEW and eos not in new[1].tolist()
    res = onnx_generate(filename, ids, mask, max_new_tokens=MAX_NEW, return_result=True)
    assert torch.equal(res.sequences, expected)
    assert res.finish_reasons == ["stop", "length"]
    # an explicit argument still wins over the metadata: an eos never generated
    other = next(t for t in range(10, 1000) if t not in free.tolist())
    longer = onnx_generate(filename, ids, mask, max_new_tokens=MAX_NEW, eos_token_id=other)
    assert torch.equal(longer, free)


def test_generation_config_is_part_of_the_key():
    model = get_untrained_model_with_inputs("llama")["model"]
    options = {"exporter": "onnx-dynamo", "opset": 23, "with_position_ids": True, "fuse": True}
    before = export_key(model, {**options, "generation_config": generation_config_json(model)})
    model.generation_config.eos_token_id = 5
    after = export_key(model, {**options, "generation_config": generation_config_json(model)})
    assert before != after
    assert json.loads(generation_config_json(model))["eos_token_id"] == 5
    model.generation_config = None
    assert generation_config_json(model) is None
