"""ONNX Runtime: the step backend with IO binding and ``onnx_generate``.

Models are read against diag's contract (:mod:`diag.contract`).

Example::

    from diag.ort import onnx_generate
    tokens = onnx_generate("model.onnx", input_ids, max_new_tokens=50)
"""

from diag.ort.backend import OrtBackend, OrtPast
from diag.ort.generate import get_backend, onnx_generate
from diag.ort.open import open_backend
from diag.ort.session import default_session_options, make_session
from diag.ort.static_backend import StaticOrtBackend, StaticPast
from diag.ort.step_backend import as_step_backend

__all__ = [
    "OrtBackend",
    "OrtPast",
    "StaticOrtBackend",
    "StaticPast",
    "as_step_backend",
    "default_session_options",
    "get_backend",
    "make_session",
    "onnx_generate",
    "open_backend",
]
