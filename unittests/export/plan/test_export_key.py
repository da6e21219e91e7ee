"""The export cache's code hash: what invalidates cached exports."""

from __future__ import annotations

import re

from diag.export.plan import export_key
from diag.export.plan.export_key import export_code_hash


def test_code_hash_covers_the_contract(monkeypatch):
    full = export_code_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", full)
    assert export_code_hash() == full
    # the contract's names decide what an export writes: they take part in the hash
    monkeypatch.setattr(export_key, "_HASHED_PACKAGES", ("export",))
    assert export_code_hash() != full
