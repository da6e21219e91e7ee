"""diag.diagnose.token_text: a token in a report, with its text when known."""

from __future__ import annotations

import pytest

from diag.diagnose.token_text import shown_token, token_text


class _Tok:
    def decode(self, ids):
        return f"<{ids[0]}>"


@pytest.mark.pinned  # string formatting, any transformers
def test_a_token_with_and_without_its_text():
    assert token_text(_Tok(), 5) == "<5>"
    assert token_text(None, 5) is None and token_text(_Tok(), None) is None
    assert shown_token(5, "<5>") == "5 '<5>'"
    assert shown_token(5, None) == "5"
