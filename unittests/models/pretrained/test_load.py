"""load_pretrained: the other kinds of names, their errors, and the real model
(slow-marked, the ``smollm2`` fixture)."""

from __future__ import annotations

import pytest
import torch

from diag.models import load_pretrained
from diag.models import pretrained as pt
from diag.models.untrained import get_tiny_config, make_untrained_model

SMOLLM2 = pt.KNOWN_MODELS["smollm2-135m-instruct"]


def test_bad_names():
    with pytest.raises(ValueError, match=r"Unknown tiny model 'bert'.*llama"):
        load_pretrained("tiny:bert")
    with pytest.raises(pt.ModelLoadError, match="looks like a path"):
        load_pretrained("./no/such/folder")
    with pytest.raises(TypeError, match="expects a name or a path"):
        load_pretrained(3)
    with pytest.raises(ValueError, match="known: smollm2-135m-instruct"):
        pt.ensure_model_folder("gpt5")


def test_hub_id_error_is_wrapped(monkeypatch):
    import huggingface_hub.constants

    # offline mode fails at once instead of retrying the network for a minute
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        pt.ModelLoadError,
        match=r"(?s)Cannot load 'someorg/some-model' from the Hugging Face hub.*tiny:<arch>",
    ):
        load_pretrained("someorg/some-model")


def test_local_folder_without_tokenizer(tmp_path):
    make_untrained_model(get_tiny_config("gpt2")).save_pretrained(tmp_path / "m")
    with pytest.raises(pt.ModelLoadError, match="has no tokenizer files"):
        load_pretrained(str(tmp_path / "m"))
    (tmp_path / "m" / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(pt.ModelLoadError, match="Cannot load a causal LM and its tokenizer"):
        load_pretrained(str(tmp_path / "m"))


# ----------------------------------------------------------------------- real model


@pytest.mark.slow
def test_smollm2_writes_code(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.tie_word_embeddings
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    assert len(tokenizer) == model.config.vocab_size == 49152
    prompt = tokenizer("def print_prime(n):", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=50, do_sample=False)
    text = tokenizer.decode(out[0, prompt.input_ids.shape[1] :], skip_special_tokens=True)
    assert "for" in text or "range" in text, text


@pytest.mark.slow
def test_smollm2_chat_template(smollm2):
    _, tokenizer = smollm2
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_smollm2_second_load_from_cache(smollm2):
    folder = pt.model_folder("smollm2-135m-instruct")
    assert pt.verify_model_folder(folder) == []
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    # a local folder path loads the same model
    model, tokenizer = load_pretrained(str(folder), progress=False)
    reference = dict(smollm2[0].named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, reference[name]), name
    assert tokenizer("def f(x):").input_ids == smollm2[1]("def f(x):").input_ids


@pytest.mark.slow
def test_tiny_model_with_smollm2_tokenizer(smollm2):
    model, tokenizer = load_pretrained("tiny:qwen2", progress=False)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    prompt = tokenizer("def print_prime(n):", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert out.shape == (1, prompt.input_ids.shape[1] + 10)
    assert isinstance(tokenizer.decode(out[0]), str)
