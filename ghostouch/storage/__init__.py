"""Object storage for trained models: a local folder or a Firebase bucket.

`build_store` picks the backend from `StorageSettings`; the Firebase backend (and
firebase-admin) is imported only when it is asked for.
"""

from __future__ import annotations

from ghostouch.storage.base import ObjectStore
from ghostouch.storage.errors import ObjectNotFound, StorageError, TransientError
from ghostouch.storage.keys import is_valid_key, validate_key, validate_prefix
from ghostouch.storage.local import LocalObjectStore
from ghostouch.storage.retry import RetryPolicy, call_with_retry
from ghostouch.storage.settings import StorageSettings
from ghostouch.storage.signing import (
    LinkError,
    LinkExpired,
    LinkInvalid,
    sign_path,
    verify_link,
)

BACKENDS = ("local", "firebase")


def build_store(settings: StorageSettings) -> ObjectStore:
    """Create the store described by `settings` (raises `StorageError` if misconfigured)."""
    if settings.backend == "local":
        return LocalObjectStore.from_settings(settings)
    if settings.backend == "firebase":
        from ghostouch.storage.firebase import FirebaseObjectStore

        return FirebaseObjectStore.from_settings(settings)
    raise StorageError(f"unknown storage backend {settings.backend!r}; expected one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "RetryPolicy",
    "StorageError",
    "StorageSettings",
    "TransientError",
    "build_store",
    "call_with_retry",
    "is_valid_key",
    "sign_path",
    "validate_key",
    "validate_prefix",
    "verify_link",
]
