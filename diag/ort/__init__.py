"""ONNX Runtime: the step backend with IO binding, opened by
:func:`diag.generation.open_steps` (:func:`diag.ort.open.open_ort_backend`) and run by
:func:`diag.onnx_generate`.

Models are read against diag's contract (:mod:`diag.contract`).

Example::

    from diag.generation import open_steps
    backend = open_steps("model.onnx").backend  # an OrtBackend
"""

from diag.ort.backend import OrtBackend, OrtPast
from diag.ort.session import default_session_options, make_session
from diag.ort.static_backend import StaticOrtBackend, StaticPast

__all__ = [
    "OrtBackend",
    "OrtPast",
    "StaticOrtBackend",
    "StaticPast",
    "default_session_options",
    "make_session",
]
