"""Text for error messages: client input quoted briefly, exceptions in one line."""

from __future__ import annotations

QUOTE_LIMIT = 40  # characters of the value's repr


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, cut after `limit` characters: an error names what was sent without
    echoing a megabyte of it back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (drivers add whole paragraphs), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
