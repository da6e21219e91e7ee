"""diag.generate against model.generate on the tiny untrained models, token for token."""

from __future__ import annotations

import copy

import pytest
import torch

from diag.generation import (
    DecodingOptions,
    TorchBackend,
    decode,
    generate,
    resolve_options,
    stream,
    stream_decode,
)

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gpt2"]
# sampling and batches on a subset, to keep the suite fast: one per attention family
SAMPLING_ARCHS = ["llama", "gemma2", "gpt2"]


# the tiny models are too small to gain from a second thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


KNOBS = {
    "default": dict(),  # transformers samples with top_k=50 when nothing is set
    "temperature": dict(temperature=0.7, top_k=0),
    "top_k": dict(top_k=5),
    "top_p": dict(top_p=0.8, top_k=0),
    "repetition_penalty": dict(repetition_penalty=1.5, top_k=0),
    "combined": dict(temperature=1.3, top_k=20, top_p=0.9, repetition_penalty=1.2),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_model_generate(tiny_model, random_prompt, arch):
    model = tiny_model(arch)
    ids = random_prompt(7, seed=1)
    expected = model.generate(ids, max_new_tokens=50, do_sample=False)
    got = generate(model, ids, max_new_tokens=50)
    assert got.shape == (1, 57)
    # an untrained model repeating one token would make this test meaningless
    assert len(set(got[0, 7:].tolist())) > 5
    assert torch.equal(got, expected)


@pytest.mark.parametrize("arch", SAMPLING_ARCHS)
@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_seeded_sampling_equals_model_generate(tiny_model, random_prompt, arch, knob):
    model = tiny_model(arch)
    ids = random_prompt(6, seed=2)
    kwargs = dict(max_new_tokens=20, do_sample=True, **KNOBS[knob])
    torch.manual_seed(11)
    expected = model.generate(ids, **kwargs)
    torch.manual_seed(11)
    got = generate(model, ids, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "knobs",
    [
        dict(min_p=0.05),
        dict(typical_p=0.5),
        dict(epsilon_cutoff=1e-4),
        dict(eta_cutoff=0.2),
    ],
    ids=["min_p", "typical_p", "epsilon", "eta"],
)
def test_other_sampling_warpers(tiny_model, random_prompt, knobs):
    model = tiny_model("llama")
    ids = random_prompt(6, seed=12)
    kwargs = dict(max_new_tokens=12, do_sample=True, top_k=0)
    torch.manual_seed(17)
    expected = model.generate(ids, **kwargs, **knobs)
    torch.manual_seed(17)
    got = generate(model, ids, **kwargs, **knobs)
    assert torch.equal(got, expected)
    torch.manual_seed(17)
    assert not torch.equal(got, generate(model, ids, **kwargs)), "the knob changed nothing"


@pytest.mark.parametrize(
    "knobs",
    [dict(no_repeat_ngram_size=2), dict(repetition_penalty=1.5)],
    ids=["no_repeat_ngram", "repetition_penalty"],
)
def test_greedy_processors(tiny_model, random_prompt, knobs):
    # processors apply to greedy decoding too (50 tokens: this prompt loops by then)
    model = tiny_model("llama")
    ids = random_prompt(7, seed=1)
    got = generate(model, ids, max_new_tokens=50, do_sample=False, **knobs)
    assert torch.equal(got, model.generate(ids, max_new_tokens=50, do_sample=False, **knobs))
    assert not torch.equal(got, generate(model, ids, max_new_tokens=50, do_sample=False))


def test_min_new_tokens_holds_eos_back(tiny_model, random_prompt):
    model = tiny_model("qwen2")
    ids = random_prompt(5, seed=31)
    row = generate(model, ids, max_new_tokens=12, eos_token_id=0)[0, 5:].tolist()
    eos = row[_first_repeat_free_token(row, 2)]
    early = generate(model, ids, max_new_tokens=12, eos_token_id=eos, return_result=True)
    assert early.finish_reasons == ["stop"] and early.num_generated_tokens[0] <= 3
    kwargs = dict(max_new_tokens=12, eos_token_id=eos, min_new_tokens=8)
    held = generate(model, ids, return_result=True, **kwargs)
    assert held.num_generated_tokens[0] >= 8
    assert torch.equal(held.sequences, model.generate(ids, **kwargs))


def test_processed_scores_equal_transformers_scores(tiny_model, left_pad, random_prompt):
    # same processors, same order, same arithmetic: the scores themselves are equal
    model = tiny_model("llama")
    ids, mask = left_pad([random_prompt(4, seed=3), random_prompt(7, seed=4)], pad_id=2)
    kwargs = dict(
        max_new_tokens=6, do_sample=True, temperature=0.8, top_k=30, top_p=0.9,
        repetition_penalty=1.3, min_new_tokens=2, no_repeat_ngram_size=3,
    )  # fmt: skip
    torch.manual_seed(5)
    out = model.generate(
        ids, attention_mask=mask, output_scores=True, output_logits=True,
        return_dict_in_generate=True, **kwargs,
    )  # fmt: skip
    torch.manual_seed(5)
    res = generate(
        model, ids, mask, output_scores=True, output_logits=True, return_result=True, **kwargs
    )
    assert torch.equal(res.sequences, out.sequences)
    assert len(res.scores) == len(out.scores) == 6
    for step, (ours, theirs) in enumerate(zip(res.scores, out.scores, strict=True)):
        assert torch.equal(ours, theirs), f"scores differ at step {step}"
    for ours, theirs in zip(res.logits, out.logits, strict=True):
        assert torch.equal(ours, theirs)


def test_explicit_generator_equals_global_seed(tiny_model, random_prompt):
    model = tiny_model("qwen2")
    ids = random_prompt(5, seed=6)
    torch.manual_seed(21)
    expected = model.generate(ids, max_new_tokens=15, do_sample=True, top_p=0.9)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    got = generate(
        model, ids, max_new_tokens=15, do_sample=True, top_p=0.9,
        generator=torch.Generator().manual_seed(21),
    )  # fmt: skip
    assert torch.equal(got, expected)
    # the global random stream was left alone
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_of_three_equals_each_prompt_alone(tiny_model, random_prompt, left_pad, arch):
    model = tiny_model(arch)
    rows = [random_prompt(n, seed=10 + n) for n in (3, 9, 5)]
    ids, mask = left_pad(rows, pad_id=2)
    got = generate(model, ids, mask, max_new_tokens=20)
    assert torch.equal(got, model.generate(ids, attention_mask=mask, max_new_tokens=20))
    for i, row in enumerate(rows):
        alone = generate(model, row, max_new_tokens=20)
        assert torch.equal(got[i, -20:], alone[0, -20:]), f"row {i} differs from its prompt alone"


def test_sampled_batch_and_num_return_sequences(tiny_model, random_prompt, left_pad):
    model = tiny_model("llama")
    ids, mask = left_pad([random_prompt(4, seed=7), random_prompt(8, seed=8)], pad_id=2)
    kwargs = dict(max_new_tokens=12, do_sample=True, top_k=40, num_return_sequences=3)
    torch.manual_seed(3)
    expected = model.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(3)
    res = generate(model, ids, mask, return_result=True, **kwargs)
    assert res.sequences.shape == (6, 8 + 12)
    assert torch.equal(res.sequences, expected)
    # rows are prompt 0 three times then prompt 1 three times, as in transformers
    assert torch.equal(res.sequences[:3, :8], ids[[0, 0, 0]])
    assert len({tuple(r) for r in res.new_tokens[:3].tolist()}) > 1


def _first_repeat_free_token(tokens: list[int], position: int) -> int:
    """The token at ``position`` if it does not appear earlier (so eos fires there)."""
    for p in range(position, len(tokens)):
        if tokens[p] not in tokens[:p]:
            return p
    raise AssertionError("no fresh token to use as eos")


def test_eos_stops_a_row_while_others_go_on(tiny_model, random_prompt, left_pad):
    model = tiny_model("llama")
    rows = [random_prompt(n, seed=20 + n) for n in (4, 6, 5)]
    ids, mask = left_pad(rows, pad_id=2)
    width = ids.shape[1]
    free = generate(model, ids, mask, max_new_tokens=16, eos_token_id=0, return_result=True)
    assert free.finish_reasons == ["length"] * 3  # token 0 never shows up
    row0 = free.new_tokens[0].tolist()
    stop_at = _first_repeat_free_token(row0, 6)
    eos = row0[stop_at]
    others_stop = [eos in free.new_tokens[i].tolist() for i in (1, 2)]

    res = generate(
        model, ids, mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=0, return_result=True
    )
    expected = model.generate(
        ids, attention_mask=mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=0
    )
    assert torch.equal(res.sequences, expected)
    assert res.finish_reasons[0] == "stop"
    assert res.num_generated_tokens[0] == stop_at + 1
    # before its eos the row is what it was without eos; after it, padding
    assert res.new_tokens[0, : stop_at + 1].tolist() == row0[: stop_at + 1]
    assert set(res.new_tokens[0, stop_at + 1 :].tolist()) <= {0}
    for i, stops in zip((1, 2), others_stop, strict=True):
        assert res.finish_reasons[i] == ("stop" if stops else "length")
    if not all(others_stop):
        assert res.sequences.shape[1] == width + 16
        assert max(res.num_generated_tokens) == 16
    assert res.num_prompt_tokens == width


def test_all_rows_stop_ends_the_loop(tiny_model, random_prompt):
    model = tiny_model("qwen2")
    ids = random_prompt(5, seed=30)
    row = generate(model, ids, max_new_tokens=12, eos_token_id=0)[0, 5:].tolist()
    stop_at = _first_repeat_free_token(row, 3)
    res = generate(
        model, ids, max_new_tokens=12, eos_token_id=[0, row[stop_at]], return_result=True
    )
    assert res.finish_reasons == ["stop"]
    assert res.sequences.shape == (1, 5 + stop_at + 1)
    assert res.num_steps == stop_at + 1  # no forward call after the last token
    assert torch.equal(
        res.sequences, model.generate(ids, max_new_tokens=12, eos_token_id=[0, row[stop_at]])
    )


def test_streaming_yields_the_tokens_of_the_plain_call(tiny_model, random_prompt, left_pad):
    model = tiny_model("gpt2")
    ids, mask = left_pad([random_prompt(3, seed=40), random_prompt(6, seed=41)], pad_id=2)
    plain = generate(model, ids, mask, max_new_tokens=10, return_result=True)
    s = stream(model, ids, mask, max_new_tokens=10)
    events = list(s)
    assert [e.step for e in events] == list(range(10))
    streamed = torch.stack([e.token_ids for e in events], dim=1)
    assert torch.equal(streamed, plain.new_tokens)
    assert torch.equal(s.result.sequences, plain.sequences)

    seen = []
    generate(model, ids, mask, max_new_tokens=10, streamer=lambda e: seen.append(e.token_ids))
    assert torch.equal(torch.stack(seen, dim=1), plain.new_tokens)


def test_transformers_style_streamer_gets_prompt_then_tokens(tiny_model, random_prompt):
    model = tiny_model("llama")
    ids = random_prompt(4, seed=50)

    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value)

        def end(self):
            self.ended = True

    ours, theirs = Recorder(), Recorder()
    got = generate(model, ids, max_new_tokens=6, streamer=ours)
    model.generate(ids, max_new_tokens=6, streamer=theirs)
    assert ours.ended and theirs.ended
    assert len(ours.puts) == len(theirs.puts) == 7
    for a, b in zip(ours.puts, theirs.puts, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.cat([p.reshape(1, -1) for p in ours.puts], dim=1), got)


def test_decode_with_a_backend_and_result_fields(tiny_model, random_prompt):
    model = tiny_model("phi3")
    ids = random_prompt(6, seed=60)
    backend = TorchBackend(model)
    assert backend.vocab_size == 49152
    options = resolve_options(defaults=model.generation_config, max_new_tokens=8)
    res = decode(backend, ids, None, options)
    assert torch.equal(res.sequences, model.generate(ids, max_new_tokens=8))
    assert res.num_generated_tokens == [8] and res.finish_reasons == ["length"]
    assert res.scores is None and res.logits is None
    assert res.prefill_seconds > 0 and res.decode_seconds > 0
    assert res.num_steps == 8
    # the iterator form, on the same backend (one generation at a time)
    s = stream_decode(backend, ids, None, options)
    assert torch.equal(s.run().sequences, res.sequences)
    # nothing to generate: the prompt comes back, no model call
    zero = decode(backend, ids, None, DecodingOptions(max_new_tokens=0))
    assert torch.equal(zero.sequences, ids) and zero.num_steps == 0


def test_model_generation_config_is_the_default(tiny_model, random_prompt):
    # a checkpoint that samples by default (many instruct models do): both functions
    # must pick up the model's generation_config the same way
    model = tiny_model("qwen3")
    ids = random_prompt(5, seed=90)
    saved = copy.deepcopy(model.generation_config)
    try:
        model.generation_config.do_sample = True
        model.generation_config.top_p = 0.7
        model.generation_config.temperature = 0.9
        torch.manual_seed(4)
        expected = model.generate(ids, max_new_tokens=15)
        torch.manual_seed(4)
        got = generate(model, ids, max_new_tokens=15)
        torch.manual_seed(4)
        greedy = generate(model, ids, max_new_tokens=15, do_sample=False)
    finally:
        model.generation_config = saved
    assert torch.equal(got, expected)
    assert torch.equal(greedy, model.generate(ids, max_new_tokens=15, do_sample=False))
    assert not torch.equal(got, greedy)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_default_length_is_transformers_default(tiny_model, random_prompt):
    model = tiny_model("mistral")
    ids = random_prompt(4, seed=70)
    assert torch.equal(generate(model, ids), model.generate(ids))


def test_generate_bad_inputs(tiny_model, random_prompt):
    model = tiny_model("llama")
    ids = random_prompt(4, seed=80)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        generate(model, ids, max_new_tokens=-3)
    with pytest.raises(ValueError, match="empty"):
        generate(model, ids[:, :0], max_new_tokens=3)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        generate(model, ids, torch.ones((1, 3), dtype=torch.long), max_new_tokens=3)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate(model, ids, max_new_tokens=3, do_sample=True, top_p=1.2)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(model, ids, max_new_tokens=3, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 49152\)"):
        generate(model, ids, max_new_tokens=3, eos_token_id=49152)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        generate(model, "hello", max_new_tokens=3)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        generate(model, [{"role": "user", "content": "hi"}], max_new_tokens=3)
    with pytest.raises(TypeError, match="prompt must be"):
        generate(model, 3.5, max_new_tokens=3)
    with pytest.raises(ValueError, match="not both"):
        generate(model, ids, max_new_tokens=3, stream=True, streamer=print)
    with pytest.raises(TypeError, match="streamer must be"):
        generate(model, ids, max_new_tokens=3, streamer=42)


def test_mask_inferred_from_pad_like_transformers(tiny_model, random_prompt, left_pad):
    model = tiny_model("llama")
    ids, _ = left_pad([random_prompt(3, seed=95), random_prompt(6, seed=96)], pad_id=0)
    # pad 0 differs from eos 2: the padding is masked out without an attention_mask
    got = generate(model, ids, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(got, model.generate(ids, max_new_tokens=8, pad_token_id=0))
    alone = generate(model, ids[1:], max_new_tokens=8, pad_token_id=0)
    assert torch.equal(got[1], alone[0])
    # pad == eos: nothing can be inferred, every token counts (as in transformers)
    same = generate(model, ids, max_new_tokens=8, pad_token_id=0, eos_token_id=[2, 0])
    assert torch.equal(
        same, model.generate(ids, max_new_tokens=8, pad_token_id=0, eos_token_id=[2, 0])
    )


def test_tokenizer_output_as_prompt_and_top_level_name(tiny_model, random_prompt, left_pad):
    import diag

    model = tiny_model("qwen2")
    ids, mask = left_pad([random_prompt(2, seed=97), random_prompt(5, seed=98)], pad_id=2)
    expected = generate(model, ids, mask, max_new_tokens=5)
    assert diag.generate is generate
    got = diag.generate(model, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=5)
    assert torch.equal(got, expected)
