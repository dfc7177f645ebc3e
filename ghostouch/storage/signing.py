"""Expiring download links answered by the API (HMAC-SHA256 over key and expiry), for every
storage backend.

A link looks like ``{public_url}/dl/<unix seconds>/<64 hex chars>/{key}``: the signature sits in
the path, so the object's file name is the URL's last segment, all of it. Android saves a
download under everything after the last "/"; a bucket's own signed URLs put several hundred
characters of query there, beyond the 255 bytes a file name may have.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

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


SIGNED_PREFIX = "dl"  # the API route of signed links: /dl/{expires}/{sig}/{key}
# Links signed by another API machine whose clock runs ahead by up to this much are still answered.
CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class DownloadLinks:
    """Signed, expiring links to stored objects, answered by the API's `/dl` route."""

    public_url: str  # where phones reach the API, e.g. "https://api.example.com"
    secret: bytes
    ttl_seconds: int
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"public_url must be an absolute http(s) URL, got {self.public_url!r}")
        _check_secret(self.secret)
        if self.ttl_seconds <= 0:
            raise ValueError("link_ttl_seconds must be positive")

    def url(self, key: str) -> str:
        expires, sig = sign_path(key, self.secret, self.ttl_seconds, now=self.clock())
        return f"{self.public_url.rstrip('/')}/{SIGNED_PREFIX}/{expires}/{sig}/{key}"

    def check(self, key: str, expires: str | int | None, sig: str | None) -> None:
        """Raise `LinkInvalid` or `LinkExpired` unless `expires` and `sig` sign `key` and are current."""
        if expires is None or sig is None:
            raise LinkInvalid("missing expires or sig")
        now = self.clock()
        verify_link(key, expires, sig, self.secret, now=now)
        if int(expires) > now + self.ttl_seconds + CLOCK_SKEW_SECONDS:  # genuine, yet never issued here
            raise LinkInvalid("expiry beyond this server's link lifetime")
