"""A token shown in a report: its id, and its text when a tokenizer is at hand.

>>> shown_token(5, "ab"), shown_token(5, None)
("5 'ab'", '5')
"""

from __future__ import annotations

from typing import Any


def token_text(tokenizer: Any, token: int | None) -> str | None:
    """The text of ``token`` (``tokenizer.decode``); None without a tokenizer or a token."""
    return tokenizer.decode([int(token)]) if tokenizer is not None and token is not None else None


def shown_token(token: int, text: str | None) -> str:
    """``5 'ab'`` (the id, then the text quoted) or ``5`` when the text is unknown."""
    return f"{token} {text!r}" if text is not None else f"{token}"


__all__ = ["shown_token", "token_text"]
