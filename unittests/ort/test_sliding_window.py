"""Generation past the sliding window: model.generate == diag.generate == onnx_generate.

The tiny variants ``mistral-sw8`` (every layer slides) and ``gemma2-sw8`` (a sliding
layer and a full one) have a window of 8 positions: prompts of 14 tokens and 24 new
ones go three times past it. Torch cuts its sliding cache layers to the window; the
exported model keeps the whole past in ``present`` (``sliding_layer_traced_as_full``)
and its sliding mask hides what is outside the window. Both must give the same tokens.
"""

from __future__ import annotations

import pytest
import torch

import diag
from diag.export import export_causal_lm
from diag.export.check.tolerance import default_atol
from diag.export.check.validate import validate_causal_lm
from diag.export.check.validation_inputs import InputSet
from diag.generation import onnx_generate, open_steps
from diag.models import get_untrained_model_with_inputs

VARIANTS = {"mistral-sw8": "mistral", "gemma2-sw8": "gemma2"}
WINDOW = 8
PROMPT = 14  # the second row: 4 padding tokens, 10 real ones, still past the window
NEW_TOKENS = 3 * WINDOW


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    """``(name, model, backend, export)``: a variant validated at export (its ``decode``
    input set, 9 past + 1 new positions, is past the window)."""
    model = get_untrained_model_with_inputs(request.param)["model"]
    assert model.config.sliding_window == WINDOW
    exported = export_causal_lm(model, verify=True)
    return request.param, model, open_steps(exported).backend, exported


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 1000, (2, PROMPT), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = 0
    return ids, mask


def test_greedy_past_the_window(variant):
    name, model, backend, _ = variant
    ids, mask = _prompts()
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    ours = diag.generate(model, ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    tokens, _, feeds = onnx_generate(
        backend,
        ids,
        mask,
        max_new_tokens=NEW_TOKENS,
        generation_config=model.generation_config,
        return_session=True,
    )
    assert expected.shape == (2, PROMPT + NEW_TOKENS)
    assert torch.equal(ours, expected), name
    assert torch.equal(tokens, expected), name
    # the exported sliding layer keeps the whole past: the last step (which makes the
    # last token from the one before it) is fed every position but these two
    assert feeds["past_key_values.0.key"].shape[2] == PROMPT + NEW_TOKENS - 2
    # the window matters: the same weights without it generate other tokens
    unwindowed = get_untrained_model_with_inputs(VARIANTS[name])["model"]
    assert unwindowed.config.sliding_window in (None, 512)
    full = unwindowed.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert not torch.equal(full, expected)


def test_seeded_sampling_past_the_window(variant):
    name, model, backend, _ = variant
    ids, mask = _prompts()
    knobs = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, max_new_tokens=NEW_TOKENS)
    torch.manual_seed(7)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    ours = diag.generate(model, ids, mask, generator=torch.Generator().manual_seed(7), **knobs)
    torch.manual_seed(7)
    tokens = onnx_generate(backend, ids, mask, **knobs)
    assert torch.equal(ours, expected), name
    assert torch.equal(tokens, expected), name


def test_validation_far_past_the_window(variant):
    # ONNX Runtime gets the whole past, torch a cache cut to the window: the logits
    # agree only if the exported mask hides the positions outside the window,
    # padding included (the second set pads the first row beyond the window)
    name, model, _, exported = variant
    report = validate_causal_lm(
        model,
        exported.filename,
        input_sets=(
            InputSet("decode_far", batch=2, seq=1, past=20, left_padding=5),
            InputSet("chunk_far_padded", batch=2, seq=3, past=20, left_padding=14),
        ),
        noise_floor=False,
    )
    assert report.ok, report.table()
    assert report.max_abs < default_atol(torch.float32), name
