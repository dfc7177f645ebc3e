"""Client input quoted back in error messages, cut to a readable length."""

from __future__ import annotations

QUOTE_LIMIT = 40  # characters of the value's repr


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, cut after `limit` characters: an error names what was sent without
    echoing a megabyte of it back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
