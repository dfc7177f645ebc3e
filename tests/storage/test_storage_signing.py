"""HMAC download links."""

from __future__ import annotations

import pytest

from ghostouch.storage import LinkError, LinkExpired, LinkInvalid, sign_path, verify_link
from ghostouch.storage.signing import DownloadLinks

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = "users/u1/models/hand.tflite"
NOW = 1_700_000_000


def test_sign_and_verify() -> None:
    expires, sig = sign_path(KEY, SECRET, 3600, now=NOW)
    assert expires == NOW + 3600
    assert len(sig) == 64
    verify_link(KEY, expires, sig, SECRET, now=NOW)
    verify_link(KEY, str(expires), sig, SECRET, now=NOW + 3599)
    verify_link(KEY, expires, sig.upper(), SECRET, now=NOW)


def test_tampered_signature() -> None:
    expires, sig = sign_path(KEY, SECRET, 3600, now=NOW)
    flipped = ("1" if sig[0] == "0" else "0") + sig[1:]
    with pytest.raises(LinkInvalid):
        verify_link(KEY, expires, flipped, SECRET, now=NOW)
    for garbage in ("", "zz", sig[:-1], sig + "0", "é" * 64):
        with pytest.raises(LinkInvalid):
            verify_link(KEY, expires, garbage, SECRET, now=NOW)


def test_tampered_key() -> None:
    expires, sig = sign_path(KEY, SECRET, 3600, now=NOW)
    with pytest.raises(LinkInvalid):
        verify_link("users/u2/models/hand.tflite", expires, sig, SECRET, now=NOW)
    with pytest.raises(LinkInvalid):
        verify_link("../" + KEY, expires, sig, SECRET, now=NOW)


def test_tampered_expiry() -> None:
    expires, sig = sign_path(KEY, SECRET, 3600, now=NOW)
    with pytest.raises(LinkInvalid):
        verify_link(KEY, expires + 86400, sig, SECRET, now=NOW)
    for garbage in ("", "-1", "1e9", " 123", "12.5", "9" * 40):
        with pytest.raises(LinkInvalid):
            verify_link(KEY, garbage, sig, SECRET, now=NOW)


def test_other_secret() -> None:
    expires, sig = sign_path(KEY, SECRET, 3600, now=NOW)
    with pytest.raises(LinkInvalid):
        verify_link(KEY, expires, sig, b"another secret", now=NOW)


def test_expired() -> None:
    expires, sig = sign_path(KEY, SECRET, 60, now=NOW)
    with pytest.raises(LinkExpired):
        verify_link(KEY, expires, sig, SECRET, now=NOW + 60)
    with pytest.raises(LinkError):
        verify_link(KEY, expires, sig, SECRET, now=NOW + 10_000)


def test_tampered_and_expired_is_invalid() -> None:
    expires, sig = sign_path(KEY, SECRET, 60, now=NOW)
    with pytest.raises(LinkInvalid):
        verify_link(KEY, expires - 1, sig, SECRET, now=NOW + 3600)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sign_path(KEY, b"", 60)
    with pytest.raises(ValueError):
        sign_path(KEY, SECRET, 0)
    with pytest.raises(ValueError):
        sign_path("a//b", SECRET, 60)
    assert issubclass(LinkExpired, LinkError) and issubclass(LinkInvalid, LinkError)


def test_a_link_outliving_the_servers_link_lifetime_is_refused() -> None:
    """Only a holder of the secret can sign one (or a server whose lifetime was shortened since):
    either way this server did not issue it."""
    links = DownloadLinks("https://api.example.com", SECRET, 3600, clock=lambda: NOW)
    links.check(KEY, *sign_path(KEY, SECRET, 3600, now=NOW))
    links.check(KEY, *sign_path(KEY, SECRET, 3600, now=NOW + 250))  # another machine's clock, ahead
    for lifetime in (3600 * 24, 10**8):
        with pytest.raises(LinkInvalid, match="beyond this server's link lifetime"):
            links.check(KEY, *sign_path(KEY, SECRET, lifetime, now=NOW))
