"""onnx_generate == diag.generate == model.generate on exported models: every tiny
architecture and SmolLM2 (slow)."""

from __future__ import annotations

import onnx
import pytest
import torch

import diag
from diag.contract import ContractError
from diag.export import export_causal_lm
from diag.generation import onnx_generate, open_steps
from diag.models import get_untrained_model_with_inputs
from diag.ort import OrtBackend, open_ort_backend
from unittests.conftest import (
    TINY_ARCHITECTURES,  # noqa: F401  (the list is the source of truth)
    left_padded_prompts,
    moe_params,
)

#: the zoo, with the mixture-of-experts families (all but one pinned)
ARCHITECTURES = TINY_ARCHITECTURES + moe_params()


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny(request):
    """``(name, model, session)``: a tiny model and a reusable session over its export
    (export_causal_lm caches exports, so other test modules share them)."""
    model = get_untrained_model_with_inputs(request.param)["model"]
    exported = export_causal_lm(model, verify=False)
    return request.param, model, open_steps(exported).backend


def _prompts(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of different lengths, the shorter one left-padded."""
    return left_padded_prompts(9, (0, 4), high=min(vocab, 1000), seed=0)


def test_greedy_batch_matches_torch(tiny):
    name, model, session = tiny
    ids, mask = _prompts(model.config.vocab_size)
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=50, do_sample=False)
    ours = diag.generate(model, ids, mask, max_new_tokens=50, do_sample=False)
    res = onnx_generate(
        session,
        ids,
        mask,
        max_new_tokens=50,
        generation_config=model.generation_config,
        return_result=True,
    )
    assert expected.shape == (2, 59)
    assert torch.equal(ours, expected), name
    assert torch.equal(res.sequences, expected), name
    assert res.num_generated_tokens == [50, 50]
    # the row alone generates what it generates in the batch
    alone = onnx_generate(session, ids[1:, 4:], max_new_tokens=50)
    assert torch.equal(alone[0], expected[1, 4:]), name


def test_seeded_sampling_matches_torch(tiny):
    name, model, session = tiny
    ids, mask = _prompts(model.config.vocab_size)
    knobs = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3)
    # shorter than the greedy run: the logits processors dominate the time here
    knobs["max_new_tokens"] = 20
    torch.manual_seed(7)
    expected = model.generate(ids, attention_mask=mask, **knobs)
    ours = diag.generate(model, ids, mask, generator=torch.Generator().manual_seed(7), **knobs)
    onnx_tokens = onnx_generate(
        session, ids, mask, generator=torch.Generator().manual_seed(7), **knobs
    )
    assert torch.equal(onnx_tokens, ours), name
    # with the global seed, like model.generate
    torch.manual_seed(7)
    global_seed = onnx_generate(session, ids, mask, **knobs)
    assert torch.equal(global_seed, expected), name


def test_broken_contract_on_a_real_export(tmp_path):
    model = get_untrained_model_with_inputs("llama")["model"]
    proto = onnx.load(export_causal_lm(model, verify=False).filename)
    old, new = "past_key_values.1.value", "past_values_1"
    for value in proto.graph.input:
        if value.name == old:
            value.name = new
    for node in proto.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
    with pytest.raises(ContractError) as info:
        onnx_generate(proto, torch.tensor([[1, 2, 3]]), max_new_tokens=3)
    message = str(info.value)
    assert f"unexpected input '{new}'" in message
    assert f"missing input '{old}'" in message
    assert "export_causal_lm" in message


# ----------------------------------------------------------------- SmolLM2 (slow)


@pytest.fixture(scope="module")
def smol_session(smollm2):
    model, tokenizer = smollm2
    tokens, session, feeds = onnx_generate(
        export_causal_lm(model),
        tokenizer("Hello", return_tensors="pt").input_ids,
        max_new_tokens=2,
        return_session=True,
    )
    assert isinstance(session, OrtBackend)
    assert "past_key_values.29.value" in feeds
    return session


@pytest.mark.slow
def test_smollm2_greedy_batch(smollm2, smol_session):
    model, tokenizer = smollm2
    prompts = ["def print_prime(n):", "The capital of France is a city where"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    expected = model.generate(**enc, max_new_tokens=60, do_sample=False)
    ours = diag.generate(model, enc.input_ids, enc.attention_mask, max_new_tokens=60)
    onnx_tokens = onnx_generate(
        smol_session,
        enc.input_ids,
        enc.attention_mask,
        max_new_tokens=60,
        generation_config=model.generation_config,
    )
    assert torch.equal(ours, expected)
    assert torch.equal(onnx_tokens, expected)


@pytest.mark.slow
def test_smollm2_sampling_eos_and_streaming(smollm2, smol_session):
    model, tokenizer = smollm2
    chat = [{"role": "user", "content": "Say hello in one short sentence."}]
    knobs = dict(
        do_sample=True,
        temperature=0.7,
        top_k=30,
        top_p=0.9,
        repetition_penalty=1.1,
        max_new_tokens=80,
        num_return_sequences=2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    ours = diag.generate(
        model,
        chat,
        tokenizer=tokenizer,
        generator=torch.Generator().manual_seed(0),
        return_result=True,
        **knobs,
    )
    deltas: list[str] = []
    res = onnx_generate(
        smol_session,
        chat,
        tokenizer=tokenizer,
        generator=torch.Generator().manual_seed(0),
        return_result=True,
        streamer=lambda event: deltas.append(event.text[0]),
        **knobs,
    )
    assert torch.equal(res.sequences, ours.sequences)
    assert res.finish_reasons == ours.finish_reasons
    assert "stop" in res.finish_reasons  # a short answer ends with the eos
    row = res.finish_reasons.index("stop")
    n = res.num_generated_tokens[row]
    assert res.new_tokens[row, n - 1].item() == tokenizer.eos_token_id
    assert "".join(deltas) == res.texts(tokenizer)[0]


def test_stream_runs_each_step_with_one_torch_thread(bigram_lm):
    """Between ONNX Runtime steps torch works on one thread (its spinning OpenMP workers
    would take ORT's cores), and the caller's code between two events keeps its own
    setting, with stream=True as without it."""
    import onnxruntime as ort

    model, _ = bigram_lm()
    inside: list[int] = []

    def spied(step):
        def run(*args):
            inside.append(torch.get_num_threads())
            return step(*args)

        return run

    spy = open_ort_backend(
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    )
    spy.prefill, spy.decode = spied(spy.prefill), spied(spy.decode)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        between = []
        stream = onnx_generate(spy, torch.tensor([[1, 2]]), max_new_tokens=4, stream=True)
        for _ in stream:
            between.append(torch.get_num_threads())
        plain = onnx_generate(spy, torch.tensor([[1, 2]]), max_new_tokens=4)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert inside == [1] * 8
    assert between == [2] * 4 and after == 2
    assert torch.equal(stream.result.sequences, plain)
