"""load_pretrained(progress=False) prints no progress bar, transformers' included, and
leaves transformers' global progress setting as it found it."""

from __future__ import annotations

import pytest
import transformers
from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as hf_logging

from diag.compat.transformers_api import shows_loading_weights_bar
from diag.models import load_pretrained
from diag.models import pretrained as pt
from diag.models.pretrained import load_tokenizer
from diag.models.untrained import get_tiny_config, make_untrained_model

BAR = "Loading weights"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny llama and SmolLM2's tokenizer saved as a Hugging Face folder."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_untrained_model(get_tiny_config("llama")).save_pretrained(path)
    load_tokenizer(progress=False).save_pretrained(path)
    return path


@pytest.fixture
def bars_on():
    """Starts with transformers' bars on and puts back the state found afterwards."""
    was_enabled, hub_was_disabled = (
        hf_logging.is_progress_bar_enabled(),
        are_progress_bars_disabled(),
    )
    hf_logging.enable_progress_bar()
    yield
    (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()
    if hub_was_disabled:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def test_progress_false_prints_no_bar_and_restores(folder, bars_on, capfd):
    model, tokenizer = load_pretrained(folder, progress=False)
    captured = capfd.readouterr()
    assert BAR not in captured.err and BAR not in captured.out
    assert model.config.model_type == "llama" and tokenizer.eos_token_id == 2
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    if not shows_loading_weights_bar():
        pytest.skip(
            f"transformers {transformers.__version__} shows no {BAR!r} bar for a one-file "
            "checkpoint (no transformers.core_model_loading): progress=True has none to show"
        )
    # the case matters: with progress=True transformers shows its bar
    load_pretrained(folder, progress=True)
    assert BAR in capfd.readouterr().err


def test_caller_choice_is_kept(folder, bars_on, capfd):
    hf_logging.disable_progress_bar()
    load_pretrained(folder, progress=False)
    assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    load_pretrained(folder, progress=True)  # True does not switch bars back on
    assert BAR not in capfd.readouterr().err
    assert not hf_logging.is_progress_bar_enabled()


def test_restored_when_loading_fails(folder, bars_on, tmp_path):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    load_tokenizer(progress=False).save_pretrained(tmp_path)
    with pytest.raises(pt.ModelLoadError, match="Cannot load a causal LM"):
        load_pretrained(tmp_path, progress=False)
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
