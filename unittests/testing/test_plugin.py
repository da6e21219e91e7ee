"""The pytest plugin: a user's three-line test, run by pytest (pytester) in both modes."""

from __future__ import annotations

import json

import pytest

from diag.testing.plugin import record_path

pytest_plugins = ["pytester"]

USER_TEST = """
def test_export_generates_the_same(diag_record):
    diag_record({path!r}, [[5, 17, 256], [9, 8]], max_new_tokens=4)
"""


@pytest.fixture
def user_test(pytester, zoo):
    _, path = zoo("llama")
    return pytester.makepyfile(test_user=USER_TEST.format(path=path))


def test_off_unless_asked():
    # no pytest11 entry point: installing diag does not load the plugin in every session
    from importlib.metadata import entry_points

    assert not [e for e in entry_points(group="pytest11") if e.value.startswith("diag")]


# pinned: the plugin's record / check cycle is pytest plumbing over diag.testing, whose
# token comparison runs on every release (test_tokens.py)
@pytest.mark.pinned
def test_plugin_records_then_checks(pytester, user_test):
    result = pytester.runpytest("-p", "diag.testing.plugin")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no golden record at*--diag-update-records*"])

    result = pytester.runpytest("-p", "diag.testing.plugin", "--diag-update-records")
    result.assert_outcomes(passed=1)
    path = record_path(str(user_test), "test_export_generates_the_same")
    content = json.loads(open(path).read())
    assert content["prompts"] == [[5, 17, 256], [9, 8]]
    assert [len(r["tokens"]) for r in content["rows"]] == [4, 4]

    result = pytester.runpytest("-p", "diag.testing.plugin")
    result.assert_outcomes(passed=1)

    content["rows"][0]["tokens"][2] += 1
    with open(path, "w") as f:
        json.dump(content, f)
    result = pytester.runpytest("-p", "diag.testing.plugin")
    result.assert_outcomes(failed=1)
    # the report is wrapped to 80 columns (diag.helpers.wrap): the sentence spans two lines
    result.stdout.fnmatch_lines(
        ["*row 0: the tokens changed at step 2 (after 2", "*identical tokens): the record has*"]
    )
