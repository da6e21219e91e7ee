"""``_doc/api_check.py``: the check ``conf.py`` runs before the docs build, that the API
page documents every public name of ``diag`` the way autodoc does (no Sphinx run)."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path

import pytest

import diag

# which directives document which names is Sphinx's rule over diag's own page: it does
# not depend on the transformers release
pytestmark = pytest.mark.pinned

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "_doc" / "api.rst"


def _load():
    spec = importlib.util.spec_from_file_location("api_check", ROOT / "_doc" / "api_check.py")
    module = importlib.util.module_from_spec(spec)
    # a dataclass looks its module up in sys.modules while it is defined
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


api_check = _load()


def test_the_api_page_documents_every_public_name():
    assert api_check.undocumented(API_PAGE.read_text(encoding="utf-8"), diag) == []


def test_docstring_examples():
    result = doctest.testmod(api_check, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0, result


@pytest.mark.parametrize(
    "page",
    [
        ".. autofunction:: diag.quantization_report\n",
        # the same object under the path of the module that defines it
        ".. autofunction:: diag.diagnose.quantization.quantization_report\n",
        ".. automodule:: diag.diagnose.quantization\n    :members: QuantizationReport, "
        "quantization_report\n",
        # a bare :members: takes the public names the module defines
        ".. automodule:: diag.diagnose.quantization\n    :members:\n",
    ],
    ids=["autofunction", "other-path", "members-listed", "members-bare"],
)
def test_documented(page):
    assert api_check.undocumented(page, diag, names=["quantization_report"]) == []


@pytest.mark.parametrize(
    "page",
    [
        "",
        # the module itself, without its members
        ".. automodule:: diag.diagnose.quantization\n    :no-members:\n",
        ".. automodule:: diag.diagnose.quantization\n",
        # another member listed, not this one
        ".. automodule:: diag.diagnose.quantization\n    :members: QuantizationReport\n",
        # a module that does not define the name (max_diff has no quantization_report)
        ".. automodule:: diag.helpers.max_diff\n    :members: quantization_report\n",
        # the option of another directive: a blank line ends the options
        ".. automodule:: diag.diagnose.quantization\n\n    :members:\n",
    ],
    ids=["absent", "no-members", "no-option", "other-member", "wrong-module", "after-blank"],
)
def test_not_documented(page):
    assert api_check.undocumented(page, diag, names=["quantization_report"]) == [
        "quantization_report"
    ]


def test_a_submodule_is_documented_by_automodule():
    page = ".. automodule:: diag.testing\n    :no-members:\n"
    assert api_check.undocumented(page, diag, names=["testing", "assert_same_tokens"]) == [
        "assert_same_tokens"
    ]


def test_the_message_gives_the_line_to_add(tmp_path: Path):
    page = API_PAGE.read_text(encoding="utf-8")
    removed = (".. autofunction:: diag.quantization_report\n", ".. autofunction:: diag.to_onnx\n")
    assert all(line in page for line in removed)  # the edit below must remove something
    path = tmp_path / "api.rst"
    path.write_text(page.replace(removed[0], "").replace(removed[1], ""))
    with pytest.raises(RuntimeError) as caught:
        api_check.check_api_page(str(path), diag)
    message = str(caught.value)
    assert "['quantization_report', 'to_onnx']" in message
    assert ".. autofunction:: diag.quantization_report    (defined in diag.diagnose)" in message
    assert ".. autofunction:: diag.to_onnx    (defined in diag.export)" in message
    assert "':members:'" in message
