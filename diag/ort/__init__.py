"""ONNX Runtime: the step backend with IO binding, opened by
:func:`diag.generation.open_steps` (:func:`diag.ort.open.open_ort_backend`) and run by
:func:`diag.onnx_generate`.

Models are read against diag's contract (:mod:`diag.contract`).

Example::

    from diag.generation import open_steps
    backend = open_steps("model.onnx").backend  # an OrtBackend
"""

from diag.ort.backend import OrtBackend, OrtPast
from diag.ort.cache import StaticPast
from diag.ort.open import open_ort_backend
from diag.ort.session import default_session_options, make_session

__all__ = [
    "OrtBackend",
    "OrtPast",
    "StaticPast",
    "default_session_options",
    "make_session",
    "open_ort_backend",
]
