"""diag.export.plan.export_options: export_causal_lm's options and defaults, held once."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from diag.export import export_causal_lm
from diag.export.plan.export_options import EXPORT_DEFAULTS, ExportOptions


@pytest.mark.pinned  # diag's own signature: no transformers release involved
def test_export_causal_lm_takes_every_option_with_its_default():
    parameters = inspect.signature(export_causal_lm).parameters
    for f in dataclasses.fields(ExportOptions):
        assert parameters[f.name].default == getattr(EXPORT_DEFAULTS, f.name), f.name


@pytest.mark.pinned  # plain dataclass plumbing
def test_of_picks_the_options_of_a_scope_and_keywords_gives_them_back():
    options = ExportOptions.of({"model": None, "force": True, "cache": "static", "max_length": 64})
    assert (options.cache, options.max_length, options.fuse) == ("static", 64, True)
    assert ExportOptions(**options.keywords()) == options
