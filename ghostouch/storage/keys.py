"""Validation of object keys and listing prefixes."""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def _check_segment(segment: str, key: str) -> None:
    if not segment:
        raise ValueError(f"invalid storage key {key!r}: empty path segment")
    if _SEGMENT.fullmatch(segment) is None:
        raise ValueError(
            f"invalid storage key {key!r}: segment {segment!r} may only contain ASCII letters, digits, '.', '_' and '-'"
        )
    if set(segment) == {"."}:
        raise ValueError(f"invalid storage key {key!r}: segment {segment!r} is not allowed")


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a valid object key, else raise `ValueError`.

    A key is a '/'-separated list of segments made of ``[A-Za-z0-9._-]``; no leading or
    trailing '/', no empty segment and no '.' or '..' segment.
    """
    if not isinstance(key, str):
        raise ValueError(f"invalid storage key {key!r}: expected a string")
    if not key:
        raise ValueError("invalid storage key '': empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"invalid storage key: longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}: must not start with '/'")
    for segment in key.split("/"):
        _check_segment(segment, key)
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: '' (everything), or a key, optionally ending with '/'.

    The prefix is matched as a plain string prefix of the keys ("models/a" matches
    "models/a1/x" too), as Cloud Storage does.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"invalid storage prefix {prefix!r}: expected a string")
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True
