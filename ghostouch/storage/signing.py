"""Expiring download links for the local backend (HMAC-SHA256 over key and expiry).

A link looks like ``{public_url}/files/{key}?expires=<unix seconds>&sig=<64 hex chars>``, so the
object's file name stays the last path segment of the URL.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from ghostouch.storage.keys import validate_key

_CONTEXT = b"ghostouch-download-link-v1"
_SIG = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,15}")


class LinkError(Exception):
    """A download link was refused."""


class LinkExpired(LinkError):
    """The link was genuine but its expiry time has passed."""


class LinkInvalid(LinkError):
    """The link is malformed or its signature does not match (tampered or foreign)."""


def _mac(key: str, expires: int, secret: bytes) -> str:
    message = b"\n".join((_CONTEXT, key.encode("ascii"), str(expires).encode("ascii")))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise ValueError("the link signing secret must be non-empty bytes")


def sign_path(key: str, secret: bytes, ttl: int, now: float | None = None) -> tuple[int, str]:
    """Return ``(expires, sig)`` for a link to `key` valid for `ttl` seconds from `now`."""
    validate_key(key)
    _check_secret(secret)
    if ttl <= 0:
        raise ValueError("link ttl must be a positive number of seconds")
    current = time.time() if now is None else now
    expires = int(current) + int(ttl)
    return expires, _mac(key, expires, bytes(secret))


def verify_link(key: str, expires: int | str, sig: str, secret: bytes, now: float | None = None) -> None:
    """Check a link made by `sign_path`; raise `LinkInvalid` or `LinkExpired` when refused.

    `expires` and `sig` may be passed straight from the query string. The signature is
    compared in constant time and checked before the expiry.
    """
    _check_secret(secret)
    try:
        validate_key(key)
    except ValueError as exc:
        raise LinkInvalid(str(exc)) from None
    if isinstance(expires, bool):
        raise LinkInvalid("malformed expiry")
    if isinstance(expires, str):
        if _EXPIRES.fullmatch(expires) is None:
            raise LinkInvalid("malformed expiry")
        expires_at = int(expires)
    elif isinstance(expires, int):
        expires_at = expires
    else:
        raise LinkInvalid("malformed expiry")
    if not isinstance(sig, str) or _SIG.fullmatch(sig.lower()) is None:
        raise LinkInvalid("malformed signature")
    expected = _mac(key, expires_at, bytes(secret))
    if not hmac.compare_digest(expected, sig.lower()):
        raise LinkInvalid("signature does not match")
    current = time.time() if now is None else now
    if current >= expires_at:
        raise LinkExpired(f"link expired at {expires_at}")
