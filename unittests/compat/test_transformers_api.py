"""The release differences of transformers, checked on the installed release with real
models: every function of :mod:`diag.compat.transformers_api` against what the
installed forward / output / cache classes do, and diag's own calls (generate, export
with its validation, onnx_generate, the diagnose tools) free of transformers'
deprecation warnings (a ``FutureWarning`` from ``warnings``, or the message its logger
prints when an old cache name is used)."""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import warnings
from collections.abc import Iterator

import pytest
import torch
import transformers
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from transformers.integrations import sdpa_attention
from transformers.modeling_outputs import CausalLMOutputWithPast

from diag.compat.transformers_api import (
    CACHE_ARGUMENTS,
    OUTPUT_CACHE_FIELDS,
    PreTrainedConfig,
    cache_argument,
    cache_input,
    cache_input_name,
    forward_parameters,
    load_tokenizer,
    new_dynamic_cache,
    output_cache,
    output_cache_field,
    parameter_names,
    require_cache_argument,
    same_parameters,
)
from diag.export import torch_export_patches
from diag.export.make.patches import EXPERTS_PATCHES, ROUTER_PATCHES, Patch
from diag.helpers.cache_helper import cache_to_list, make_dynamic_cache
from diag.models import get_untrained_model_with_inputs
from diag.models.untrained import get_tiny_config, make_untrained_model
from unittests.conftest import TINY_ARCHITECTURES

PROMPT = torch.tensor([[5, 17, 256, 1024, 4000, 77, 9]])


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _is_deprecation(message: str) -> bool:
    text = message.lower()
    return "past_key_values" in text or "cache_params" in text or "deprecated" in text


@contextlib.contextmanager
def no_transformers_deprecation() -> Iterator[None]:
    """Fails when the block makes transformers warn about a deprecated name, through
    ``warnings`` (``FutureWarning`` / ``DeprecationWarning`` raised in transformers, or
    any warning naming the old cache names) or through its logger."""
    handler = _Recorder()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(handler)
    bad = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if (
            issubclass(w.category, (FutureWarning, DeprecationWarning))
            and "transformers" in w.filename
        )
        or "past_key_values" in str(w.message)
    ]
    bad += [f"transformers logger: {m}" for m in handler.messages if _is_deprecation(m)]
    assert not bad, "diag triggered deprecation warnings of transformers:\n" + "\n".join(bad)


# -- the compat functions, on the installed release --------------------------------------


@pytest.mark.parametrize("name", TINY_ARCHITECTURES)
def test_cache_argument_is_the_forward_parameter_that_takes_the_cache(name):
    data = get_untrained_model_with_inputs(name)
    model = data["model"]
    arg = cache_argument(model)
    assert arg in CACHE_ARGUMENTS
    assert arg in inspect.signature(model.forward).parameters
    assert arg in forward_parameters(model) and "input_ids" in forward_parameters(model)
    # the cache given under that name is the one the forward extends
    cache = copy.deepcopy(cache_input(data["inputs"]))
    ids = data["inputs"]["input_ids"]
    with torch.no_grad(), no_transformers_deprecation():
        out = model(input_ids=ids, **{arg: cache}, use_cache=True)
        returned = output_cache(out)
    assert returned.get_seq_length() == 5 + ids.shape[1]
    assert [k.shape[2] for k, _ in cache_to_list(returned)][-1] == 5 + ids.shape[1]


def test_only_the_newest_name_when_the_release_has_both():
    def forward(input_ids, cache=None, past_key_values=None):
        return input_ids

    assert cache_argument(forward) == "cache"
    assert cache_argument(lambda input_ids, past_key_values=None: 0) == "past_key_values"


def test_no_cache_argument():
    linear = torch.nn.Linear(2, 2)
    assert cache_argument(linear) is None
    with pytest.raises(TypeError, match="Linear.forward takes no key/value cache.*my tool"):
        require_cache_argument(linear, "my tool")
    with pytest.raises(TypeError, match="expected a model"):
        forward_parameters(3)


def test_output_cache_and_its_field(llama_model):
    with torch.no_grad(), no_transformers_deprecation():
        out = llama_model(input_ids=PROMPT, use_cache=True)
        field = output_cache_field(out)
        assert field in OUTPUT_CACHE_FIELDS
        assert output_cache(out) is getattr(out, field)
        assert output_cache(out).get_seq_length() == PROMPT.shape[1]
        # the output class names the same field, and building one with it round-trips
        assert output_cache_field(CausalLMOutputWithPast) == field
        built = CausalLMOutputWithPast(logits=out.logits, **{field: output_cache(out)})
        assert output_cache(built) is output_cache(out)
        assert list(built.keys()) == ["logits", field]
    assert output_cache(CausalLMOutputWithPast(logits=out.logits)) is None
    assert output_cache_field(object()) is None


def test_cache_input_name():
    assert cache_input_name({"input_ids": 1, "cache": 2}) == "cache"
    assert cache_input({"input_ids": 1, "past_key_values": 3}) == 3
    assert cache_input({"input_ids": 1}) is None
    with pytest.raises(ValueError, match="both cache and past_key_values"):
        cache_input_name({"cache": 1, "past_key_values": 2})


def test_parameter_names_and_same_parameters():
    assert parameter_names(DynamicLayer.get_seq_length) == []
    update = parameter_names(DynamicLayer.update)
    assert update[:2] == ["key_states", "value_states"]
    assert same_parameters(DynamicLayer.update, DynamicSlidingWindowLayer.update)
    assert not same_parameters(DynamicLayer.update, DynamicLayer.get_seq_length)


def test_pretrained_config_is_the_base_of_configs():
    assert isinstance(get_tiny_config("llama"), PreTrainedConfig)
    assert PreTrainedConfig.__name__ in ("PreTrainedConfig", "PretrainedConfig")


def test_new_dynamic_cache_follows_the_config():
    config = get_tiny_config("gemma2-sw8")
    cache = new_dynamic_cache(config)
    k = torch.randn(1, 4, 12, 16)
    for i in range(config.num_hidden_layers):
        cache.update(k, k, i)
    # the sliding layer keeps sliding_window - 1 positions, the full one every position
    assert [k.shape[2] for k, _ in cache_to_list(cache)] == [7, 12]
    assert type(new_dynamic_cache()).__name__ == "DynamicCache"
    assert len(new_dynamic_cache().layers) == 0


@pytest.mark.parametrize("saved_class", ["TokenizersBackend", "PreTrainedTokenizerFast"])
def test_load_tokenizer_of_a_folder_saved_by_any_release(tmp_path, saved_class):
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, "hello": 2, "world": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tokenizer.json"))
    # what 5.x writes (TokenizersBackend) or 4.x (PreTrainedTokenizerFast)
    config = {"tokenizer_class": saved_class, "eos_token": "</s>", "unk_token": "<unk>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = load_tokenizer(tmp_path)
    encoded = tokenizer("hello world oops")
    assert encoded["input_ids"] == [2, 3, 0]
    if saved_class == "TokenizersBackend":
        # what 5.x's class gives and a causal LM's generate takes (no token_type_ids)
        assert sorted(encoded) == ["attention_mask", "input_ids"]
    assert tokenizer.eos_token_id == 1


# -- the export patches against the installed release ------------------------------------


def test_patches_apply_to_the_installed_release():
    # every supported release has what both transformers patches replace
    with torch_export_patches(patch_torch=False) as report:
        patched = sdpa_attention.use_gqa_in_sdpa
        assert parameter_names(patched) in (
            ["attention_mask", "key"],
            ["attention_mask", "key", "value"],
        )
        key = torch.zeros(1, 2, 3, 8)
        args = (torch.ones(1, 1, 3, 3, dtype=torch.bool), key)
        if "value" in parameter_names(patched):
            args = (*args, torch.zeros(1, 2, 3, 8))
        # with a mask the original says no (repeat_kv on CPU); the patch says yes
        assert patched(*args) is True
    # the experts patches are written per release family, the router patches apply only
    # when their model family's module is imported (an earlier test may have imported
    # it): test_patches.py and test_router_patches.py check them
    experts = {patch.name for patch in (*EXPERTS_PATCHES, *ROUTER_PATCHES)}
    assert [n for n in report.skipped if not any(f"'{e}'" in n for e in experts)] == []
    assert [name for name in report.applied if name not in experts] == [
        "sdpa_gqa_without_repeat_kv",
        "sliding_layer_traced_as_full.update",
        "sliding_layer_traced_as_full.get_mask_sizes",
        "sliding_layer_traced_as_full.get_seq_length",
    ]
    assert sdpa_attention.use_gqa_in_sdpa is not patched


def test_a_patch_whose_check_fails_is_skipped_with_its_reason():
    original = sdpa_attention.use_gqa_in_sdpa
    patch = Patch(
        name="wrong_shape",
        target="transformers.integrations.sdpa_attention:use_gqa_in_sdpa",
        factory=lambda original: None,
        why="a test",
        check=lambda original: f"takes ({', '.join(parameter_names(original))})",
    )
    with torch_export_patches(patch_torch=False, extra_patches=[patch]) as report:
        assert [note for note in report.skipped if "'wrong_shape'" in note] == [
            f"skipped 'wrong_shape': takes ({', '.join(parameter_names(original))})"
        ]
        assert "wrong_shape" not in report.applied
    assert sdpa_attention.use_gqa_in_sdpa is original


# -- diag's own calls raise no deprecation warning ---------------------------------------


@pytest.fixture(scope="module")
def llama_model():
    return make_untrained_model(get_tiny_config("llama"), seed=0)


@pytest.fixture(scope="module")
def llama_onnx(llama_model, tmp_path_factory):
    import diag

    path = str(tmp_path_factory.mktemp("compat") / "llama.onnx")
    # the export, its validation (verify) and the dummy inputs, without a deprecated name
    with no_transformers_deprecation():
        result = diag.export_causal_lm(llama_model, path, force=True)
    assert result.validation is None or result.validation.ok
    return result.filename


def test_generate_without_deprecation(llama_model):
    import diag

    with no_transformers_deprecation():
        got = diag.generate(llama_model, PROMPT, max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        expected = llama_model.generate(PROMPT, max_new_tokens=8, do_sample=False)
    assert torch.equal(torch.as_tensor(got), expected)


def test_export_and_onnx_generate_without_deprecation(llama_model, llama_onnx):
    import diag

    with no_transformers_deprecation():
        got = diag.onnx_generate(llama_onnx, PROMPT, max_new_tokens=8)
    with torch.no_grad():
        expected = llama_model.generate(PROMPT, max_new_tokens=8, do_sample=False)
    assert torch.equal(torch.as_tensor(got), expected)


def test_diagnose_without_deprecation(llama_model, llama_onnx):
    from diag.diagnose import compare_teacher_forced, localize_layer

    with no_transformers_deprecation():
        table = compare_teacher_forced(llama_model, llama_onnx, PROMPT, max_new_tokens=5)
        inputs = get_untrained_model_with_inputs("llama")["inputs"]
        report = localize_layer(llama_model, llama_onnx, inputs)
    assert len(table) == 5 and table["argmax_agree"].all()
    assert report.culprit is None, str(report)


def test_localize_layer_takes_the_cache_under_either_name(llama_model, llama_onnx):
    from diag.diagnose import localize_layer

    inputs = get_untrained_model_with_inputs("llama")["inputs"]
    name = cache_input_name(inputs)
    other = next(n for n in CACHE_ARGUMENTS if n != name)
    renamed = {k: v for k, v in inputs.items() if k != name}
    renamed[other] = make_dynamic_cache(cache_to_list(inputs[name]))
    report = localize_layer(llama_model, llama_onnx, renamed)
    assert report.culprit is None, str(report)


def test_load_config_reads_the_rotary_base_of_a_folder_written_by_5x(tmp_path):
    # the config.json of a folder converted by transformers 5.x (SmolLM2's cache): the
    # rotary base under rope_parameters, which 4.57 does not read by itself
    import json

    from diag.compat.transformers_api import load_config

    saved = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    }
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_config(tmp_path)
    model = transformers.LlamaForCausalLM(config)
    inv_freq = model.model.rotary_emb.inv_freq
    head_dim = 32 // 4
    expected = 1.0 / (100000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    torch.testing.assert_close(inv_freq, expected)
