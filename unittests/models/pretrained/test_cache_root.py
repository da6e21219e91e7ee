"""cache_root and model_folder follow $DIAG_CACHE."""

from __future__ import annotations

from diag.models import pretrained as pt


def test_cache_root_follows_env(empty_cache):
    assert pt.cache_root() == empty_cache
    assert (
        pt.model_folder("smollm2-135m-instruct") == empty_cache / "models" / "smollm2-135m-instruct"
    )


