"""diag.generation.parameter_docs: the :param lines generate and onnx_generate share."""

from __future__ import annotations

import inspect

import pytest

import diag
from diag.generation.parameter_docs import MARKER, PARAMETERS, with_parameter_docs


@pytest.mark.pinned  # docstrings of diag's own functions: no transformers release involved
@pytest.mark.parametrize("fn", [diag.generate, diag.onnx_generate])
def test_every_parameter_is_described_once(fn):
    doc = fn.__doc__
    assert MARKER not in doc
    for name in inspect.signature(fn).parameters:
        assert doc.count(f":param {name}:") == 1, name
    assert f":param top_k: {PARAMETERS['top_k']}" in doc


@pytest.mark.pinned  # docstring plumbing only
def test_a_docstring_without_the_marker_is_refused():
    def f(top_k=None):
        """Generates."""

    with pytest.raises(ValueError, match="must hold the line '.. decoding parameters' once"):
        with_parameter_docs(f)
