"""The `ObjectStore` interface shared by every backend."""

from __future__ import annotations

import abc
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from ghostouch.storage.errors import ObjectNotFound, StorageError, TransientError
from ghostouch.storage.keys import is_valid_key, validate_key, validate_prefix
from ghostouch.storage.retry import RetryPolicy, call_with_retry, describe, is_transient
from ghostouch.storage.signing import DownloadLinks, LinkInvalid

T = TypeVar("T")


def signed_links(
    public_url: str, secret: bytes, ttl_seconds: int, clock: Callable[[], float] = time.time
) -> DownloadLinks:
    """The API's signed links for a store (`StorageError` when the settings cannot make them)."""
    try:
        return DownloadLinks(public_url, bytes(secret), int(ttl_seconds), clock)
    except ValueError as exc:
        raise StorageError(f"signed links: {exc}") from None


log = logging.getLogger(__name__)

PROBE_PREFIX = ".ghostouch-probe"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore(abc.ABC):
    """A flat key -> bytes store with download links for phones.

    The public methods validate the key, run the backend primitive (the ``_``-prefixed
    abstract methods) under the retry policy, and raise only `StorageError` (including
    `ObjectNotFound`) or `ValueError` for a bad key. Primitives signal retryable failures by
    raising `TransientError` (or anything `_is_transient` accepts).
    """

    def __init__(
        self,
        *,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._retry_policy = retry_policy or RetryPolicy()
        self._sleep = sleep

    # ------------------------------------------------------------------ public API

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> str:
        """Store `data` under `key`, verify what was stored, return its sha256 (hex)."""
        validate_key(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        payload = bytes(data)
        digest = sha256_hex(payload)
        self._retry(
            lambda: self._store_verified(key, payload, content_type, digest),
            f"storing {key!r} in {self.description}",
        )
        return digest

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        return self._retry(lambda: self._read(key), f"reading {key!r} from {self.description}")

    def exists(self, key: str) -> bool:
        validate_key(key)
        return self._retry(lambda: self._exists(key), f"checking {key!r} in {self.description}")

    def delete(self, key: str) -> None:
        validate_key(key)
        self._retry(lambda: self._delete(key), f"deleting {key!r} from {self.description}")

    def age_seconds(self, key: str, now: float | None = None) -> float:
        """Seconds from when the object was last written until `now` (Unix time; never negative).
        By default `now` is this machine's clock, while the store stamps its objects by its own
        (the storage service's, or the writing machine's): pass `store_time()` to compare like with like."""
        validate_key(key)
        written = self._retry(lambda: self._written_at(key), f"reading the age of {key!r} in {self.description}")
        return max(0.0, (time.time() if now is None else now) - written)

    def store_time(self) -> float:
        """Now by the clock that stamps this store's objects: when a probe object written now was
        written, by the store's account (it is deleted again). Ages measured from it do not depend
        on the clock of the machine asking."""
        key = f"{PROBE_PREFIX}/{secrets.token_hex(8)}"
        try:
            self.put_bytes(key, b"the store's time")
            return float(self._retry(lambda: self._written_at(key), f"reading the time of {self.description}"))
        finally:
            self._forget_probe(key)

    def list_keys(self, prefix: str) -> list[str]:
        """Keys starting with `prefix` (a plain string prefix; '' lists everything), sorted."""
        validate_prefix(prefix)
        keys = self._retry(lambda: self._list(prefix), f"listing {prefix!r} in {self.description}")
        return sorted(k for k in set(keys) if k.startswith(prefix) and is_valid_key(k))

    # Signed links answered by the API's `/dl` route; None where the store's links are public.
    _links: DownloadLinks | None = None

    def signed_url(self, key: str) -> str:
        """An expiring link to `key` that the API answers (`/dl/...`)."""
        if self._links is None:
            raise StorageError(f"{self.description} has no signed links (public links, or none configured)")
        return self._links.url(key)

    def authorize_download(self, key: str, expires: str | int | None, sig: str | None) -> None:
        """Check the signature and expiry of a request for `key` at the API (`LinkError` if refused)."""
        if self._links is None:
            raise LinkInvalid(f"{self.description} gives public links, not the API")
        self._links.check(key, expires, sig)

    def download_url(self, key: str) -> str:
        """An absolute http(s) URL whose last path segment is the object's file name."""
        validate_key(key)
        return self._url(key)

    def check_writable(self) -> None:
        """Write, read back and delete a probe object; raise `StorageError` on any problem."""
        key = f"{PROBE_PREFIX}/{secrets.token_hex(8)}"
        payload = secrets.token_bytes(32)
        try:
            self.put_bytes(key, payload)
            if self.get_bytes(key) != payload:
                raise StorageError("the probe object read back differs from what was written")
            self.delete(key)
            if self.exists(key):
                raise StorageError("the probe object is still there after deleting it")
        except StorageError as exc:
            self._forget_probe(key)
            raise StorageError(f"{self.description} is not usable: {exc}") from exc
        except Exception as exc:
            self._forget_probe(key)
            raise StorageError(f"{self.description} is not usable: {describe(exc)}") from exc

    def close(self) -> None:
        """Release resources held by the store (nothing by default)."""
        return None

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Short human-readable name of the store, used in error messages."""

    # ------------------------------------------------------------- backend primitives

    @abc.abstractmethod
    def _write(self, key: str, data: bytes, content_type: str) -> None: ...

    @abc.abstractmethod
    def _read(self, key: str) -> bytes:
        """Return the object's bytes; raise `ObjectNotFound` if absent."""

    @abc.abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None:
        """Delete the object; do nothing if absent."""

    @abc.abstractmethod
    def _list(self, prefix: str) -> list[str]: ...

    @abc.abstractmethod
    def _written_at(self, key: str) -> float:
        """When the object was last written (Unix time); raise `ObjectNotFound` if absent."""

    @abc.abstractmethod
    def _url(self, key: str) -> str: ...

    def _store_verified(self, key: str, data: bytes, content_type: str, digest: str) -> None:
        """One attempt: write, then read back and compare checksums."""
        self._write(key, data, content_type)
        try:
            stored = self._read(key)
        except ObjectNotFound as exc:
            raise TransientError(f"{key!r} is missing right after writing it") from exc
        got = sha256_hex(stored)
        if got != digest:
            raise TransientError(
                f"checksum mismatch after writing {key!r}: expected sha256 {digest}, "
                f"read back {got} ({len(stored)} of {len(data)} bytes)"
            )

    # ------------------------------------------------------------------- helpers

    def _is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retry(
            fn,
            what=what,
            policy=self._retry_policy,
            classify=self._is_transient,
            sleep=self._sleep,
        )

    def _forget_probe(self, key: str) -> None:
        try:
            self._delete(key)
        except Exception as exc:  # best effort: the original error matters more
            log.debug("could not remove probe object %s: %s", key, describe(exc))
