"""onnx_generate on an ``attention="gqa"`` export (GroupQueryAttention, right padding)
gives model.generate's tokens: greedy, seeded sampling, a left-padded batch of 3 (the
driver moves the padding after the tokens), past the sliding window of mistral-sw8;
the layout is read from the file and from a session's metadata, and the prefill asks
for each row's last real position only."""

from __future__ import annotations

import onnx
import pytest
import torch

from diag import contract
from diag.contract.detect import detect_layout
from diag.generation import onnx_generate, open_steps
from diag.ort import make_session, open_ort_backend
from unittests.conftest import left_padded_prompts

PROMPT = 10  # past the window of 8 of mistral-sw8 already
NEW_TOKENS = 6


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows: no padding, 3 and 6 padding tokens on the left."""
    return left_padded_prompts(PROMPT, (0, 3, 6), high=90, seed=0)


def _same_as_generate(model, backend, ids, mask) -> None:
    config = model.generation_config
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    tokens = onnx_generate(backend, ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                           generation_config=config)  # fmt: skip
    assert expected.shape == (ids.shape[0], ids.shape[1] + NEW_TOKENS)
    assert torch.equal(tokens, expected)
    knobs = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, max_new_tokens=NEW_TOKENS)
    torch.manual_seed(3)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    torch.manual_seed(3)
    tokens = onnx_generate(backend, ids, mask, generation_config=config, **knobs)
    assert torch.equal(tokens, expected)


# GroupQueryAttention on llama on every release; pinned: mistral-sw8 (a second
# architecture, its own GQA export of ~12 s)
@pytest.mark.parametrize(
    "name",
    [
        "llama",
        pytest.param("mistral-sw8", marks=pytest.mark.pinned),
        pytest.param("qwen2", marks=pytest.mark.slow),
    ],
)
def test_gqa_generates_what_generate_does(gqa_exports, one_torch_thread, name):
    model, exported = gqa_exports(name)
    backend = open_steps(exported).backend
    assert backend.layout.padding == "right"
    ids, mask = _prompts()
    _same_as_generate(model, backend, ids, mask)


def test_layout_from_the_file_and_the_session(gqa_exports, one_torch_thread):
    _, exported = gqa_exports("llama")
    assert detect_layout(exported.filename) == contract.GQA_LAYOUT
    session = make_session(exported.filename)
    assert detect_layout(session).padding == "right"
    backend = open_ort_backend(session)
    ids, mask = _prompts()
    positions = (mask.cumsum(-1) - 1).clip(0)
    logits, past = backend.prefill(ids, mask, positions)
    # the rows' last real positions after the padding moved: 9, 6 and 3, each once
    assert backend.last_feeds[contract.LOGITS_TO_KEEP].tolist() == [3, 6, 9]
    assert backend.last_feeds[contract.ATTENTION_MASK].tolist()[2] == [1] * 4 + [0] * 6
    assert logits.shape == (3, backend.vocab_size) and past.length == PROMPT


@pytest.mark.slow
def test_smollm2_gqa_generates_what_generate_does(smollm2, one_torch_thread):
    from diag.export import export_causal_lm

    model, tokenizer = smollm2
    exported = export_causal_lm(model, attention="gqa")
    ops = onnx.load(exported.filename, load_external_data=False).graph.node
    assert sum(n.op_type == "GroupQueryAttention" for n in ops) == model.config.num_hidden_layers
    assert not any(n.op_type == "Attention" for n in ops)
    tokenizer.padding_side = "left"
    batch = tokenizer(
        ["The capital of France is", "Write a haiku about the sea:", "1, 2, 3,"],
        return_tensors="pt", padding=True,
    )  # fmt: skip
    assert (batch["attention_mask"] == 0).any()
    _same_as_generate(model, open_steps(exported).backend, batch["input_ids"], batch["attention_mask"])


@pytest.fixture(scope="module")
def static_gqa(tmp_path_factory):
    """``get(name) -> (model, ExportResult)``: ``cache="static"`` with ``attention="gqa"``."""
    from diag.export import export_causal_lm
    from diag.models import get_untrained_model_with_inputs

    done: dict = {}

    def get(name: str):
        if name not in done:
            model = get_untrained_model_with_inputs(name)["model"].eval()
            path = tmp_path_factory.mktemp(f"static-gqa-{name}") / "model.onnx"
            done[name] = (model, export_causal_lm(model, path, cache="static", max_length=32, attention="gqa"))
        return done[name]

    return get


# pinned: the static cache and GroupQueryAttention each run on every release (llama,
# test_static_backend.py and above); their combination is one more export of ~12 s
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("llama", marks=pytest.mark.pinned),
        pytest.param("mistral-sw8", marks=pytest.mark.slow),
    ],
)
def test_static_gqa_generates_what_generate_does(static_gqa, one_torch_thread, name):
    from diag.ort.cache import InPlaceCache

    model, exported = static_gqa(name)
    ops = [(n.domain, n.op_type) for n in onnx.load(exported.filename, load_external_data=False).graph.node]
    assert ops.count(("com.microsoft", "GroupQueryAttention")) == model.config.num_hidden_layers
    assert not {"Attention", "TensorScatter", "RotaryEmbedding"} & {op for _, op in ops}
    assert exported.validation is not None and exported.validation.ok
    backend = open_steps(exported).backend
    assert isinstance(backend.cache, InPlaceCache) and backend.layout.padding == "right"
    ids, mask = _prompts()
    _same_as_generate(model, backend, ids, mask)
    # the kernel writes the buffers bound as past and present: the same memory after a step
    positions = (mask.cumsum(-1) - 1).clip(0)
    _, past = backend.prefill(ids, mask, positions)
    before = [v.data_ptr() for v in past]
    step_mask = torch.cat([mask, torch.ones((3, 1), dtype=mask.dtype)], dim=1)
    _, after = backend.decode(ids[:, -1:], step_mask, positions[:, -1:] + 1, past)
    assert [v.data_ptr() for v in after] == before and after.length == PROMPT + 1
    # row 2 (6 padding tokens) holds its 4 tokens and the step's one at position 4
    keys = after[0].numpy()
    assert (keys[2, :, :5] != 0).any(axis=(0, 2)).all()
