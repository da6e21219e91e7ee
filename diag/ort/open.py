"""The ONNX Runtime half of :func:`diag.generation.steps.open_steps`: from a folder, an
``.onnx`` file, a ModelProto, an ``onnx_ir.Model`` or a session to an
:class:`~diag.ort.backend.OrtBackend`. What the contract knows of the model (files,
layout, contract, generation defaults, a static cache's length) is asked for once
(:func:`diag.contract.description.describe_model`); then the sessions are made (two
for a prefill + decode pair) and the device of the session's provider and the cache
strategy (:mod:`diag.ort.cache`: in place for a static cache export) chosen.

Example::

    backend = open_ort_backend("genai-folder")                      # onnxruntime-genai
    backend = open_ort_backend("exported", layout={"head_dim": 64})  # a field overridden
    backend.layout.name
    # 'onnxruntime-genai'
"""

from __future__ import annotations

import os
from typing import Any

import onnxruntime as ort

from diag.contract.description import LayoutArg, ModelDescription, describe_model
from diag.ort.backend import OrtBackend
from diag.ort.cache import CacheStrategy, GrowingCache, InPlaceCache
from diag.ort.chunked_prefill import PREFILL_CHUNK
from diag.ort.session import Providers, make_session, provider_device


def _sessions(
    model: Any,
    description: ModelDescription,
    providers: Providers,
    session_options: ort.SessionOptions | None,
) -> list[ort.InferenceSession]:
    """The sessions that run ``model``, in run order (prefill then decode for a pair)."""
    if description.paths:
        return [
            make_session(p, providers, session_options=session_options) for p in description.paths
        ]
    if description.graph is not None:
        return [make_session(description.graph, providers, session_options=session_options)]
    return [model]  # the session given


def _build(
    sessions: list[ort.InferenceSession],
    description: ModelDescription,
    *,
    vocab_size: int | None,
    prefill_chunk: int | None,
    source: Any,
) -> OrtBackend:
    """The backend of ``sessions`` read as ``description``: the device of the session's
    provider and the cache strategy, each chosen once."""
    session = sessions[-1]
    contract = description.contract
    device_type, device_id = provider_device(session)
    device_type = device_type.lower()
    cache: CacheStrategy = GrowingCache(contract, device_type, device_id)
    if description.max_length is not None:
        cache = InPlaceCache(contract, description.max_length, device_type, device_id)
    return OrtBackend(
        session,
        contract,
        cache=cache,
        prefill_session=sessions[0] if len(sessions) == 2 else None,
        generation_defaults=description.generation_defaults,
        vocab_size=vocab_size,
        device_type=device_type,
        device_id=device_id,
        prefill_chunk=prefill_chunk,
        source=source,
    )


def check_providers(backend: OrtBackend, providers: Providers) -> None:
    """Refuses ``providers`` other than those the backend's session already runs on."""
    if providers is None:
        return
    wanted = [
        p[0] if isinstance(p, tuple) else p
        for p in ([providers] if isinstance(providers, str) else providers)
    ]
    if wanted and wanted[0] != backend.session.get_providers()[0]:
        raise ValueError(
            f"providers={providers!r} but the session given runs on "
            f"{backend.session.get_providers()}; create a new one from the model file to "
            "change providers."
        )


def _session_file(session: ort.InferenceSession) -> str | None:
    # a session created from a file remembers it (a private attribute of onnxruntime's
    # Python class, hence getattr): layer localisation and the weights hash read it
    path = getattr(session, "_model_path", None)
    return path if isinstance(path, str) and os.path.exists(path) else None


def open_ort_backend(
    model: Any,
    providers: Providers = None,
    *,
    layout: LayoutArg = None,
    session_options: ort.SessionOptions | None = None,
    vocab_size: int | None = None,
    prefill_chunk: int | None = PREFILL_CHUNK,
) -> OrtBackend:
    """An :class:`OrtBackend` over ``model``: a folder (onnxruntime-genai's builder
    output, transformers' exporter's ``save_pretrained``), an ``.onnx`` file, an
    ``onnx.ModelProto`` / ``onnx_ir.Model``, an ``onnxruntime.InferenceSession`` or an
    OrtBackend (returned as it is). Its ``source`` is the graph's file
    (the decode graph of a pair) or the ModelProto, when known. ``prefill_chunk``: see
    :mod:`diag.ort.chunked_prefill`.

    Raises a :class:`~diag.contract.read.ContractError` saying why when the model
    cannot be driven (``python -m diag inspect PATH`` says the same and more).
    """
    if isinstance(model, OrtBackend):
        check_providers(model, providers)
        return model
    description = describe_model(model, layout)
    sessions = _sessions(model, description, providers, session_options)
    source = _session_file(model) if isinstance(model, ort.InferenceSession) else description.source
    return _build(
        sessions, description, vocab_size=vocab_size, prefill_chunk=prefill_chunk, source=source
    )


__all__ = ["check_providers", "open_ort_backend"]
