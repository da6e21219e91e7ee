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
        ".. autofunction:: diag.measure_bandwidth\n",
        # the same object under the path of the module that defines it
        ".. autofunction:: diag.helpers.bandwidth.measure_bandwidth\n",
        ".. automodule:: diag.helpers.bandwidth\n    :members: decode_weight_bytes, "
        "measure_bandwidth\n",
        # a bare :members: takes the public names the module defines
        ".. automodule:: diag.helpers.bandwidth\n    :members:\n",
    ],
    ids=["autofunction", "other-path", "members-listed", "members-bare"],
)
def test_documented(page):
    assert api_check.undocumented(page, diag, names=["measure_bandwidth"]) == []


@pytest.mark.parametrize(
    "page",
    [
        "",
        # the module itself, without its members
        ".. automodule:: diag.helpers.bandwidth\n    :no-members:\n",
        ".. automodule:: diag.helpers.bandwidth\n",
        # another member listed, not this one
        ".. automodule:: diag.helpers.bandwidth\n    :members: decode_weight_bytes\n",
        # a module that does not define the name (max_diff has no measure_bandwidth)
        ".. automodule:: diag.helpers.max_diff\n    :members: measure_bandwidth\n",
        # the option of another directive: a blank line ends the options
        ".. automodule:: diag.helpers.bandwidth\n\n    :members:\n",
    ],
    ids=["absent", "no-members", "no-option", "other-member", "wrong-module", "after-blank"],
)
def test_not_documented(page):
    assert api_check.undocumented(page, diag, names=["measure_bandwidth"]) == ["measure_bandwidth"]


def test_a_submodule_is_documented_by_automodule():
    page = ".. automodule:: diag.testing\n    :no-members:\n"
    assert api_check.undocumented(page, diag, names=["testing", "assert_same_tokens"]) == [
        "assert_same_tokens"
    ]


def test_the_message_gives_the_line_to_add(tmp_path: Path):
    page = API_PAGE.read_text(encoding="utf-8")
    assert "measure_bandwidth, " in page  # the edit below must remove something
    path = tmp_path / "api.rst"
    path.write_text(
        page.replace("measure_bandwidth, ", "").replace(".. autofunction:: diag.to_onnx\n", "")
    )
    with pytest.raises(RuntimeError) as caught:
        api_check.check_api_page(str(path), diag)
    message = str(caught.value)
    assert "['measure_bandwidth', 'to_onnx']" in message
    assert (
        ".. autofunction:: diag.measure_bandwidth    (defined in diag.helpers.bandwidth)" in message
    )
    assert ".. autofunction:: diag.to_onnx    (defined in diag.export)" in message
    assert "':members:'" in message
