"""The ONNX Runtime half of :func:`diag.generation.steps.open_steps`: from a folder, an
``.onnx`` file, a ModelProto, an ``onnx_ir.Model`` or a session to an
:class:`~diag.ort.backend.OrtBackend`. Everything the backend needs is read here, once:
the layout detected (:mod:`diag.contract.detect`), the sessions made (two for a
prefill + decode pair), the contract read, the device of the session's provider, the
generation defaults (side files, else metadata) and the cache strategy
(:mod:`diag.ort.cache`: in place for a static cache export).

Example::

    backend = open_ort_backend("genai-folder")                      # onnxruntime-genai
    backend = open_ort_backend("exported", layout={"head_dim": 64})  # a field overridden
    backend.layout.name
    # 'onnxruntime-genai'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import onnx
import onnxruntime as ort

from diag.contract import metadata_generation_config, metadata_static_cache, read_contract
from diag.contract.detect import detect_layout, find_model
from diag.contract.layout import Layout
from diag.contract.read import contract_error
from diag.ort.backend import OrtBackend
from diag.ort.cache import CacheStrategy, GrowingCache, InPlaceCache
from diag.ort.chunked_prefill import PREFILL_CHUNK
from diag.ort.session import Providers, make_session, provider_device

#: what ``layout=`` takes: a Layout (replaces the detected one), a mapping (fields of
#: the detected one overridden), None (detected)
LayoutArg = Layout | Mapping[str, Any] | None


def static_max_length(session: ort.InferenceSession) -> int | None:
    """The positions of a static export's buffers: its metadata, else the static third
    dimension of its first cache input; None when the model has neither."""
    entry = metadata_static_cache(session)
    if entry and isinstance(entry.get("max_length"), int):
        return entry["max_length"]
    for i in session.get_inputs():
        if len(i.shape) == 4 and isinstance(i.shape[2], int) and i.name != "input_ids":
            return int(i.shape[2])
    return None


def _build(
    session: ort.InferenceSession,
    layout: Layout,
    *,
    prefill_session: ort.InferenceSession | None = None,
    generation_defaults: dict[str, Any] | None = None,
    vocab_size: int | None = None,
    prefill_chunk: int | None = PREFILL_CHUNK,
    source: Any = None,
) -> OrtBackend:
    """The backend of ``session`` read as ``layout``: its contract, device, defaults and
    cache strategy, each read once."""
    contract = read_contract(session, layout=layout)
    if prefill_session is not None:
        wanted = layout.prefill_output_names(contract.num_layers)
        produced = {o.name for o in prefill_session.get_outputs()}
        missing = [n for n in wanted if n not in produced]
        if missing:
            raise contract_error(
                [f"the prefill graph lacks the outputs {missing[:3]} ({len(missing)} in all)"],
                layout,
            )
    device_type, device_id = provider_device(session)
    device_type = device_type.lower()
    cache: CacheStrategy = GrowingCache(contract, device_type, device_id)
    if layout.is_static:
        max_length = layout.max_length or static_max_length(session)
        if max_length is None:
            raise ValueError(
                f"{layout.name} layout: the cache inputs have no static length and the "
                "metadata no max_length; export with export_causal_lm(model, cache='static', "
                "max_length=N)."
            )
        cache = InPlaceCache(contract, max_length, device_type, device_id)
    return OrtBackend(
        session,
        contract,
        cache=cache,
        prefill_session=prefill_session,
        generation_defaults=generation_defaults or metadata_generation_config(session),
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
    wanted = [p[0] if isinstance(p, tuple) else p for p in ([providers] if isinstance(providers, str) else providers)]
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
    options = {"vocab_size": vocab_size, "prefill_chunk": prefill_chunk}
    if isinstance(model, ort.InferenceSession):
        found_layout = detect_layout(model, layout)
        return _build(model, found_layout, source=_session_file(model), **options)
    if isinstance(model, (str, os.PathLike)):
        found = find_model(model, layout)
        sessions = [make_session(p, providers, session_options=session_options) for p in found.paths]
        return _build(
            sessions[-1],
            found.layout,
            prefill_session=sessions[0] if len(sessions) == 2 else None,
            generation_defaults=found.generation_defaults or None,
            source=found.paths[-1],
            **options,
        )
    if type(model).__module__.startswith("onnx_ir"):
        import onnx_ir as ir

        model = ir.serde.serialize_model(model)
    if isinstance(model, onnx.ModelProto):
        found_layout = detect_layout(model, layout)
        session = make_session(model, providers, session_options=session_options)
        return _build(session, found_layout, source=model, **options)
    raise TypeError(
        "model must be a folder or a path to an .onnx file, an onnx.ModelProto, an "
        f"onnx_ir.Model or an onnxruntime.InferenceSession, got {type(model).__name__}."
    )


__all__ = ["LayoutArg", "check_providers", "open_ort_backend", "static_max_length"]
