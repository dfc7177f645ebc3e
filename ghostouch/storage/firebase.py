"""Objects in a Firebase (Google Cloud Storage) bucket, through `firebase-admin`.

Authentication uses the service account's key to sign self-issued JWTs
(``always_use_jwt_access=True``), so no OAuth token is ever fetched from Google. When the
``STORAGE_EMULATOR_HOST`` environment variable is set (with its scheme, e.g.
``http://127.0.0.1:9023``) when the store is built, every request goes to that emulator.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import firebase_admin
import google_crc32c
import requests
from firebase_admin import credentials as fb_credentials
from firebase_admin import storage as fb_storage
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.oauth2 import service_account

from ghostouch.storage.base import ObjectStore, sha256_hex, signed_links
from ghostouch.storage.errors import ObjectNotFound, StorageError, TransientError
from ghostouch.storage.keys import is_valid_key
from ghostouch.storage.retry import RetryPolicy, describe
from ghostouch.storage.settings import StorageSettings
from ghostouch.storage.signing import DownloadLinks

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_TRANSIENT_STATUS = frozenset({408, 429})


class SelfSignedCredential(fb_credentials.Base):
    """A firebase-admin credential that signs its own JWTs instead of fetching OAuth tokens."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            self._g_credential = service_account.Credentials.from_service_account_file(
                str(path), scopes=list(SCOPES), always_use_jwt_access=True
            )
        except FileNotFoundError:
            raise StorageError(f"Firebase service account file {str(path)!r} not found") from None
        except (OSError, ValueError, KeyError) as exc:
            raise StorageError(f"cannot load the Firebase service account from {str(path)!r}: {describe(exc)}") from exc

    @property
    def project_id(self) -> str | None:
        value = self._g_credential.project_id
        return str(value) if value else None

    @property
    def service_account_email(self) -> str:
        return str(self._g_credential.service_account_email)

    def get_credential(self) -> service_account.Credentials:
        return self._g_credential


def _status_of(exc: InvalidResponse) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


@contextmanager
def _translated(what: str, not_found: StorageError | None = None) -> Iterator[None]:
    """Turn google/requests exceptions into TransientError / StorageError / ObjectNotFound."""
    try:
        yield
    except gexc.NotFound as exc:
        raise (not_found or StorageError(f"{what}: not found")) from exc
    except gexc.GoogleAPICallError as exc:
        code = exc.code if isinstance(exc.code, int) else None
        reason = f"{what}: HTTP {code} {exc.message}"
        if isinstance(exc, gexc.ServerError) or code in _TRANSIENT_STATUS:
            raise TransientError(reason) from exc
        raise StorageError(reason) from exc
    except DataCorruption as exc:
        raise TransientError(f"{what}: corrupted transfer: {exc}") from exc
    except InvalidResponse as exc:
        status = _status_of(exc)
        reason = f"{what}: unexpected response (HTTP {status}): {exc}"
        if status is None or status >= 500 or status in _TRANSIENT_STATUS:
            raise TransientError(reason) from exc
        raise StorageError(reason) from exc
    except (requests.ConnectionError, requests.Timeout, auth_exc.TransportError) as exc:
        raise TransientError(f"{what}: {describe(exc)}") from exc
    except auth_exc.GoogleAuthError as exc:
        raise StorageError(f"{what}: authentication failed: {describe(exc)}") from exc


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def _crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


class FirebaseObjectStore(ObjectStore):
    """Private objects in a Cloud Storage bucket, downloaded through the API's signed links
    (`signing.DownloadLinks`), or public objects with plain bucket URLs (`public_links`)."""

    def __init__(
        self,
        *,
        credentials_path: Path,
        bucket_name: str,
        project_id: str | None = None,
        public_links: bool = False,
        links: DownloadLinks | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 20.0,
    ) -> None:
        super().__init__(retry_policy=retry_policy, sleep=sleep)
        if not bucket_name:
            raise StorageError("no Firebase storage bucket configured")
        # Private objects are linked through the API (`links`): the bucket's own signed URLs end
        # in several hundred characters of query, which Android would take into the file name.
        self._links = None if public_links else links
        emulator = os.environ.get(EMULATOR_ENV)
        if emulator and not emulator.startswith(("http://", "https://")):
            raise StorageError(f"{EMULATOR_ENV} must include the scheme, e.g. http://127.0.0.1:9023 (got {emulator!r})")
        self._bucket_name = bucket_name
        self._public_links = public_links
        self._timeout = timeout
        self._credential = SelfSignedCredential(Path(credentials_path))
        options: dict[str, Any] = {"storageBucket": bucket_name}
        project = project_id or self._credential.project_id
        if project:
            options["projectId"] = project
        self._app = firebase_admin.initialize_app(
            self._credential, options, name=f"ghostouch-storage-{uuid.uuid4().hex}"
        )
        try:
            # Creates the google-cloud-storage client: STORAGE_EMULATOR_HOST is read here.
            self._bucket = fb_storage.bucket(app=self._app)
        except Exception:
            firebase_admin.delete_app(self._app)
            raise

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> FirebaseObjectStore:
        if settings.firebase_credentials is None:
            raise StorageError("the Firebase backend needs a service account file (FIREBASE_CREDENTIALS)")
        if not settings.firebase_bucket:
            raise StorageError("the Firebase backend needs a bucket (FIREBASE_STORAGE_BUCKET)")
        return cls(
            credentials_path=settings.firebase_credentials,
            bucket_name=settings.firebase_bucket,
            project_id=settings.firebase_project_id,
            public_links=settings.public_links,
            links=None
            if settings.public_links or settings.signing_secret is None  # None: not the API's store
            else signed_links(settings.public_url, settings.signing_secret, settings.link_ttl_seconds),
            retry_policy=settings.retry_policy(),
            timeout=settings.request_timeout,
        )

    @property
    def description(self) -> str:
        return f"Firebase bucket {self._bucket_name!r}"

    @property
    def bucket(self) -> Any:
        """The underlying `google.cloud.storage.Bucket`."""
        return self._bucket

    @property
    def credential(self) -> SelfSignedCredential:
        return self._credential

    def close(self) -> None:
        """Delete the named firebase app; the store must not be used afterwards."""
        with contextlib.suppress(ValueError):  # already deleted
            firebase_admin.delete_app(self._app)

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key!r} not found in {self.description}")

    # ------------------------------------------------------------------ primitives

    def _upload(self, key: str, data: bytes, content_type: str) -> Any:
        """Upload one object and return its blob (with the server's metadata)."""
        blob = self._bucket.blob(key)
        no_bucket = StorageError(f"cannot store {key!r}: {self.description} does not exist")
        with _translated(f"uploading {key!r} to {self.description}", not_found=no_bucket):
            blob.upload_from_string(data, content_type=content_type, timeout=self._timeout, retry=None)
        return blob

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        self._upload(key, data, content_type)

    def _store_verified(self, key: str, data: bytes, content_type: str, digest: str) -> None:
        blob = self._upload(key, data, content_type)
        self._verify_blob(blob, key, data, digest)
        if self._public_links:
            self._make_public(key)

    def _verify_blob(self, blob: Any, key: str, data: bytes, digest: str) -> None:
        """Compare the checksums the server reports with ours; re-download if it reports none."""
        checks = (
            ("md5", blob.md5_hash, _md5_b64),
            ("crc32c", blob.crc32c, _crc32c_b64),
        )
        reported = [(name, value, fn) for name, value, fn in checks if value]
        if reported:
            for name, value, fn in reported:
                expected = fn(data)
                if value != expected:
                    raise TransientError(
                        f"checksum mismatch after uploading {key!r}: server {name} {value}, expected {expected}"
                    )
            return
        stored = self._read(key)
        got = sha256_hex(stored)
        if got != digest:
            raise TransientError(
                f"checksum mismatch after uploading {key!r}: expected sha256 {digest}, read back {got}"
            )

    def _read(self, key: str) -> bytes:
        blob = self._bucket.blob(key)
        with _translated(f"downloading {key!r} from {self.description}", self._not_found(key)):
            data = blob.download_as_bytes(timeout=self._timeout, retry=None)
        return bytes(data)

    def _written_at(self, key: str) -> float:
        with _translated(f"reading the age of {key!r} in {self.description}", self._not_found(key)):
            blob = self._bucket.get_blob(key, timeout=self._timeout, retry=None)
        if blob is None:
            raise self._not_found(key)
        written = blob.updated or blob.time_created
        if written is None:  # pragma: no cover - every object has both in GCS's JSON API
            raise StorageError(f"{self.description} gave no time for {key!r}")
        return float(written.timestamp())

    def _exists(self, key: str) -> bool:
        blob = self._bucket.blob(key)
        with _translated(f"checking {key!r} in {self.description}"):
            return bool(blob.exists(timeout=self._timeout, retry=None))

    def _delete(self, key: str) -> None:
        blob = self._bucket.blob(key)
        try:
            with _translated(f"deleting {key!r} from {self.description}", self._not_found(key)):
                blob.delete(timeout=self._timeout, retry=None)
        except ObjectNotFound:
            return

    def _list(self, prefix: str) -> list[str]:
        with _translated(f"listing {prefix!r} in {self.description}"):
            blobs = self._bucket.list_blobs(prefix=prefix or None, timeout=self._timeout, retry=None)
            return [blob.name for blob in blobs if is_valid_key(blob.name)]

    def _make_public(self, key: str) -> None:
        blob = self._bucket.blob(key)
        with _translated(f"making {key!r} public in {self.description}", self._not_found(key)):
            blob.make_public(timeout=self._timeout, retry=None)

    def _url(self, key: str) -> str:
        if self._public_links:  # made public when stored: the link is only a string
            return str(self._bucket.blob(key).public_url)
        return self.signed_url(key)
