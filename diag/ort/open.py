"""The ONNX Runtime half of :func:`diag.generation.steps.open_steps`: from a folder, an
``.onnx`` file, a ModelProto, an ``onnx_ir.Model`` or a session to an
:class:`~diag.ort.backend.OrtBackend`: the layout detected
(:mod:`diag.contract.detect`), the sessions made (two for a prefill + decode pair),
the generation defaults of the side files read, the backend class of the cache picked.

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

from diag.contract.detect import detect_layout, find_model
from diag.contract.layout import Layout
from diag.ort.backend import OrtBackend
from diag.ort.session import Providers, make_session
from diag.ort.static_backend import StaticOrtBackend

#: what ``layout=`` takes: a Layout (replaces the detected one), a mapping (fields of
#: the detected one overridden), None (detected)
LayoutArg = Layout | Mapping[str, Any] | None


def _driver(layout: Layout) -> type[OrtBackend]:
    """The backend class of ``layout``: buffers bound in place for a static cache."""
    return StaticOrtBackend if layout.is_static else OrtBackend


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
) -> OrtBackend:
    """An :class:`OrtBackend` over ``model``: a folder (onnxruntime-genai's builder
    output, transformers' exporter's ``save_pretrained``), an ``.onnx`` file, an
    ``onnx.ModelProto`` / ``onnx_ir.Model``, an ``onnxruntime.InferenceSession`` or an
    OrtBackend (returned as it is). Its ``source`` is the graph's file
    (the decode graph of a pair) or the ModelProto, when known.

    Raises a :class:`~diag.contract.read.ContractError` saying why when the model
    cannot be driven (``python -m diag inspect PATH`` says the same and more).
    """
    if isinstance(model, OrtBackend):
        check_providers(model, providers)
        return model
    if isinstance(model, ort.InferenceSession):
        found_layout = detect_layout(model, layout)
        return _driver(found_layout)(
            model, layout=found_layout, vocab_size=vocab_size, source=_session_file(model)
        )
    if isinstance(model, (str, os.PathLike)):
        found = find_model(model, layout)
        sessions = [make_session(p, providers, session_options=session_options) for p in found.paths]
        return _driver(found.layout)(
            sessions[-1],
            layout=found.layout,
            prefill_session=sessions[0] if len(sessions) == 2 else None,
            generation_defaults=found.generation_defaults or None,
            vocab_size=vocab_size,
            source=found.paths[-1],
        )
    if type(model).__module__.startswith("onnx_ir"):
        import onnx_ir as ir

        model = ir.serde.serialize_model(model)
    if isinstance(model, onnx.ModelProto):
        found_layout = detect_layout(model, layout)
        session = make_session(model, providers, session_options=session_options)
        return _driver(found_layout)(
            session, layout=found_layout, vocab_size=vocab_size, source=model
        )
    raise TypeError(
        "model must be a folder or a path to an .onnx file, an onnx.ModelProto, an "
        f"onnx_ir.Model or an onnxruntime.InferenceSession, got {type(model).__name__}."
    )


__all__ = ["LayoutArg", "check_providers", "open_ort_backend"]
