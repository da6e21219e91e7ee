"""A pytest plugin for golden records, off unless a test session asks for it.

Turn it on with ``pytest -p diag.testing.plugin`` or with
``pytest_plugins = ["diag.testing.plugin"]`` in the root ``conftest.py`` (a test
module that sets it gets the fixture, but pytest has parsed its options by then:
``--diag-update-records`` needs one of the two others). It adds the option
``--diag-update-records`` and the fixture ``diag_record``: a test calls
``diag_record(model_or_onnx, prompts, **options)``; the fixture writes the record
(:func:`diag.testing.record`) when the option is given and checks it
(:func:`diag.testing.assert_matches_record`) otherwise. Records live next to the test
file, in ``records/<test name>.json`` (``name=`` or ``path=`` to choose).

Example (a whole test file, run with ``pytest -p diag.testing.plugin``)::

    def test_export_still_generates_the_same(diag_record):
        diag_record("exported/model.onnx", [[1, 2, 3]], max_new_tokens=10)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest

UPDATE_OPTION = "--diag-update-records"
RECORDS_FOLDER = "records"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("diag", "diag golden records")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="write the golden records of the diag_record fixture instead of checking them",
    )


def record_path(test_file: str | os.PathLike, test_name: str) -> str:
    """Where the record of a test lives: ``records/<test name>.json`` next to its file
    (characters other than letters, digits, ``-``, ``_``, ``.`` become ``_``).

    >>> record_path("/t/test_a.py", "test_x[llama-1]")
    '/t/records/test_x_llama-1_.json'
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", test_name)
    return os.path.join(os.path.dirname(os.fspath(test_file)), RECORDS_FOLDER, f"{name}.json")


@pytest.fixture
def diag_record(request: Any) -> Callable[..., str]:
    """``diag_record(model_or_onnx, prompts, *, name=None, path=None, **options)``:
    writes the record with ``--diag-update-records``, checks it otherwise; returns
    the record's path. ``options`` go to :func:`diag.testing.record` (``tokenizer``,
    ``max_new_tokens``, decoding options, ``atol``...)."""
    update = bool(request.config.getoption(UPDATE_OPTION))

    def check(
        model_or_onnx: Any,
        prompts: Any,
        *,
        name: str | None = None,
        path: str | os.PathLike | None = None,
        **options: Any,
    ) -> str:
        from diag.testing.record_check import assert_matches_record
        from diag.testing.records import record

        target = os.fspath(path) if path is not None else record_path(
            request.node.path, name or request.node.name
        )  # fmt: skip
        if update:
            return record(model_or_onnx, prompts, target, **options)
        if not os.path.exists(target):
            pytest.fail(
                f"no golden record at {target}: run pytest {UPDATE_OPTION} once to write it "
                "(and commit it).",
                pytrace=False,
            )
        # what only shapes the record, not the run, is not compared
        for recording_only in ("atol", "rtol", "noise_floor", "num_candidates"):
            options.pop(recording_only, None)
        assert_matches_record(model_or_onnx, target, prompts=prompts, **options)
        return target

    return check


__all__ = ["UPDATE_OPTION", "diag_record", "pytest_addoption", "record_path"]
