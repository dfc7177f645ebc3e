"""The Firebase backend against a real Cloud Storage emulator (no mocks of the service)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ghostouch.storage import (
    LinkExpired,
    LinkInvalid,
    ObjectNotFound,
    StorageError,
    StorageSettings,
    TransientError,
    build_store,
)
from ghostouch.storage.firebase import FirebaseObjectStore
from ghostouch.storage.retry import RetryPolicy

# Fixture values (defined in conftest.py, not imported: another conftest may shadow it).
Emulator = Any
ServiceAccount = Any
TokenTrap = Any
FirebaseStoreFactory = Callable[..., Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_round_trip(firebase_store: Any, unique_prefix: str) -> None:
    key = f"{unique_prefix}/models/gesture.tflite"
    data = b"\x00TFL3" + bytes(range(256)) * 40
    digest = firebase_store.put_bytes(key, data, "application/octet-stream")
    assert digest == hashlib.sha256(data).hexdigest()
    assert firebase_store.get_bytes(key) == data
    assert firebase_store.exists(key)

    firebase_store.put_bytes(f"{unique_prefix}/models/other.tflite", b"2")
    firebase_store.put_bytes(f"{unique_prefix}/labels.json", b"{}", "application/json")
    assert firebase_store.list_keys(f"{unique_prefix}/models/") == [
        f"{unique_prefix}/models/gesture.tflite",
        f"{unique_prefix}/models/other.tflite",
    ]
    assert len(firebase_store.list_keys(unique_prefix)) == 3
    assert firebase_store.list_keys(f"{unique_prefix}/nothing/") == []

    assert 0.0 <= firebase_store.age_seconds(key) < 120.0  # the storage sweep's guard reads it
    now = firebase_store.store_time()  # the store's clock, which the sweep measures ages by
    assert 0.0 <= firebase_store.age_seconds(key, now) < 120.0
    assert firebase_store.list_keys(".ghostouch-probe") == []  # its probe object is gone

    firebase_store.delete(key)
    assert not firebase_store.exists(key)
    firebase_store.delete(key)  # absent: no error
    with pytest.raises(ObjectNotFound):
        firebase_store.age_seconds(key)
    assert firebase_store.list_keys(f"{unique_prefix}/models/") == [f"{unique_prefix}/models/other.tflite"]


def test_overwrite_and_content_type(firebase_store: Any, unique_prefix: str) -> None:
    key = f"{unique_prefix}/labels.json"
    firebase_store.put_bytes(key, b"old")
    firebase_store.put_bytes(key, b'{"new": true}', "application/json")
    assert firebase_store.get_bytes(key) == b'{"new": true}'
    blob = firebase_store.bucket.get_blob(key)
    assert blob.content_type == "application/json"


def test_server_checksums_match_upload(firebase_store: Any, unique_prefix: str) -> None:
    key = f"{unique_prefix}/data.bin"
    data = b"checksum me" * 1000
    firebase_store.put_bytes(key, data)
    blob = firebase_store.bucket.get_blob(key)
    assert blob.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert blob.size == len(data)


class CorruptingStore(FirebaseObjectStore):
    """Uploads the wrong bytes for the first `corrupt` attempts (a real upload each time)."""

    corrupt = 0
    uploads = 0

    def _upload(self, key: str, data: bytes, content_type: str) -> Any:
        self.uploads += 1
        if self.uploads <= self.corrupt:
            data = data[::-1] + b"!"
        return super()._upload(key, data, content_type)


def _corrupting_store(
    service_account: ServiceAccount, emulator: Emulator, corrupt: int, attempts: int
) -> CorruptingStore:
    store = CorruptingStore(
        credentials_path=service_account.path,
        bucket_name=emulator.bucket,
        project_id=emulator.project,
        retry_policy=RetryPolicy(attempts=attempts, base_delay=0.01, jitter=0),
    )
    store.corrupt = corrupt
    return store


def test_checksum_mismatch_is_retried_then_reported(
    gcs_emulator: Emulator,
    service_account: ServiceAccount,
    unique_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    key = f"{unique_prefix}/model.tflite"

    healing = _corrupting_store(service_account, gcs_emulator, corrupt=1, attempts=3)
    try:
        healing.put_bytes(key, b"the real model")
        assert healing.uploads == 2
        assert healing.get_bytes(key) == b"the real model"
    finally:
        healing.close()

    broken = _corrupting_store(service_account, gcs_emulator, corrupt=99, attempts=3)
    try:
        with pytest.raises(StorageError, match=r"after 3 attempts.*checksum mismatch"):
            broken.put_bytes(key, b"another model")
        assert broken.uploads == 3
    finally:
        broken.close()


def test_missing_object(firebase_store: Any, unique_prefix: str) -> None:
    key = f"{unique_prefix}/missing.tflite"
    with pytest.raises(ObjectNotFound, match=r"missing\.tflite"):
        firebase_store.get_bytes(key)
    assert not firebase_store.exists(key)
    firebase_store.delete(key)


def test_key_validation(firebase_store: Any) -> None:
    for bad in ("../x", "/abs", "a//b", "a/./b", "modèle.tflite"):
        with pytest.raises(ValueError):
            firebase_store.put_bytes(bad, b"x")
        with pytest.raises(ValueError):
            firebase_store.download_url(bad)


def test_signed_links_are_answered_by_the_api(firebase_store_factory: FirebaseStoreFactory, unique_prefix: str) -> None:
    """Private objects get the API's signed links: the file name is the whole last segment (a
    bucket's own signed URL puts 700-odd characters of query there, more than a file name may
    hold on a phone), the link checks out at the API and expires there, and making one needs no
    request to the bucket."""
    store = firebase_store_factory(public_url="https://api.example.com", signing_secret=b"k" * 32)
    key = f"{unique_prefix}/models/hand-v2.tflite"
    data = b"signed model bytes"
    store.put_bytes(key, data)
    url = store.download_url(key)
    parsed = urlparse(url)
    assert url.startswith("https://api.example.com/dl/") and not parsed.query
    assert url.rsplit("/", 1)[1] == "hand-v2.tflite"
    _, _, expires, sig, *_ = parsed.path.split("/")
    store.authorize_download(key, expires, sig)
    assert int(expires) - time.time() == pytest.approx(3600, abs=5)
    with pytest.raises(LinkInvalid):
        store.authorize_download(f"{unique_prefix}/models/other.tflite", expires, sig)
    brief = firebase_store_factory(signing_secret=b"k" * 32, link_ttl_seconds=1)
    _, _, expires, sig, *_ = urlparse(brief.download_url(key)).path.split("/")
    brief.authorize_download(key, expires, sig)
    time.sleep(max(0.0, int(expires) - time.time()) + 0.05)
    with pytest.raises(LinkExpired):
        brief.authorize_download(key, expires, sig)
    week_and_more = firebase_store_factory(signing_secret=b"k" * 32, link_ttl_seconds=30 * 24 * 3600)
    expires = urlparse(week_and_more.download_url(key)).path.split("/")[2]
    assert int(expires) - time.time() > 29 * 24 * 3600  # no bucket limit (v4 URLs: 7 days)
    with pytest.raises(StorageError, match="signed links: the link signing secret must be non-empty"):
        firebase_store_factory(signing_secret=b"")


def test_public_download_url(
    firebase_store_factory: FirebaseStoreFactory, gcs_emulator: Emulator, unique_prefix: str
) -> None:
    store = firebase_store_factory(public_links=True)
    key = f"{unique_prefix}/public/model.tflite"
    data = b"public model"
    store.put_bytes(key, data)
    url = store.download_url(key)
    assert url == f"{gcs_emulator.url}/{gcs_emulator.bucket}/{key}"
    assert "X-Goog-Signature" not in url
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    acl = store.bucket.blob(key).acl
    acl.reload()
    assert "READER" in acl.all().get_roles()


def test_no_oauth_token_is_fetched(
    firebase_store: Any,
    service_account: ServiceAccount,
    token_trap: TokenTrap,
    unique_prefix: str,
) -> None:
    firebase_store.put_bytes(f"{unique_prefix}/x.bin", b"x")
    firebase_store.get_bytes(f"{unique_prefix}/x.bin")
    firebase_store.download_url(f"{unique_prefix}/x.bin")
    assert token_trap.hits == []
    # The bearer token is a JWT signed by our own key, not an OAuth access token.
    token = firebase_store.credential.get_credential().token
    header_b64, payload_b64, sig_b64 = token.split(".")

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header = json.loads(unb64(header_b64))
    payload = json.loads(unb64(payload_b64))
    assert header["kid"] == service_account.key_id
    assert payload["iss"] == payload["sub"] == service_account.email
    service_account.public_key.verify(
        unb64(sig_b64),
        f"{header_b64}.{payload_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_stores_coexist(firebase_store_factory: FirebaseStoreFactory, unique_prefix: str) -> None:
    first = firebase_store_factory()
    second = firebase_store_factory(public_links=True)
    first.put_bytes(f"{unique_prefix}/shared.bin", b"1")
    assert second.get_bytes(f"{unique_prefix}/shared.bin") == b"1"


def test_check_writable(firebase_store: Any) -> None:
    firebase_store.check_writable()
    assert firebase_store.list_keys(".ghostouch-probe/") == []


def test_missing_bucket_is_a_permanent_error(
    firebase_store_factory: FirebaseStoreFactory,
) -> None:
    store = firebase_store_factory(firebase_bucket="no-such-bucket")
    with pytest.raises(StorageError) as info:
        store.put_bytes("a/b.bin", b"x")
    assert not isinstance(info.value, ObjectNotFound)
    assert "no-such-bucket" in str(info.value)
    with pytest.raises(StorageError, match="not usable"):
        store.check_writable()


def test_unreachable_server_is_retried(
    firebase_store_factory: FirebaseStoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    store = firebase_store_factory(retry_attempts=2)
    with pytest.raises(StorageError, match=r"after 2 attempts.*onnection") as info:
        store.get_bytes("a/b.bin")
    assert isinstance(info.value.__cause__, TransientError)


def test_configuration_errors(tmp_path: Path, service_account: ServiceAccount, monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {
        "backend": "firebase",
        "data_dir": tmp_path,
        "public_url": "http://127.0.0.1:8000",
        "signing_secret": b"s",
        "firebase_credentials": service_account.path,
        "firebase_bucket": "bucket",
    }
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
    with pytest.raises(StorageError, match="scheme"):
        build_store(StorageSettings(**base))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    with pytest.raises(StorageError, match="FIREBASE_CREDENTIALS"):
        build_store(StorageSettings(**{**base, "firebase_credentials": None}))
    with pytest.raises(StorageError, match="FIREBASE_STORAGE_BUCKET"):
        build_store(StorageSettings(**{**base, "firebase_bucket": None}))
    with pytest.raises(StorageError, match="not found"):
        build_store(StorageSettings(**{**base, "firebase_credentials": tmp_path / "nope.json"}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"type": "service_account"}')
    with pytest.raises(StorageError, match="cannot load"):
        build_store(StorageSettings(**{**base, "firebase_credentials": garbage}))
