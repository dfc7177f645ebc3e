"""The local backend: files under data_dir/objects, atomic writes, signed links."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from ghostouch.storage import (
    LinkExpired,
    LinkInvalid,
    LocalObjectStore,
    ObjectNotFound,
    StorageError,
    StorageSettings,
    build_store,
    validate_key,
    verify_link,
)

SECRET = b"local-test-secret"
BASE_URL = "http://127.0.0.1:8000"
BAD_KEYS = [
    "../x",
    "a/../x",
    "/abs",
    "a//b",
    "a/./b",
    ".",
    "..",
    "",
    "a/",
    "modèle.tflite",
    "ü/x",
    "a b",
    "a\\b",
    "a?b",
    "a\nb",
    "x" * 1025,
]


def make_store(tmp_path: Path, **overrides: object) -> LocalObjectStore:
    values: dict[str, object] = {
        "backend": "local",
        "data_dir": tmp_path,
        "public_url": BASE_URL,
        "signing_secret": SECRET,
        "retry_base_delay": 0.0,
    }
    values.update(overrides)
    store = build_store(StorageSettings(**values))  # type: ignore[arg-type]
    assert isinstance(store, LocalObjectStore)
    return store


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return make_store(tmp_path)


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_round_trip(store: LocalObjectStore, tmp_path: Path) -> None:
    data = b"\x00\x01model" * 1000
    digest = store.put_bytes("users/u1/models/hand.tflite", data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("users/u1/models/hand.tflite") == data
    assert store.exists("users/u1/models/hand.tflite")
    path = tmp_path / "objects" / "users" / "u1" / "models" / "hand.tflite"
    assert path.read_bytes() == data
    assert store.local_path("users/u1/models/hand.tflite") == path
    store.put_bytes("users/u1/models/hand.tflite", b"v2")
    assert store.get_bytes("users/u1/models/hand.tflite") == b"v2"
    store.put_bytes("empty.bin", b"")
    assert store.get_bytes("empty.bin") == b""


def test_missing_object(store: LocalObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=r"nope\.tflite"):
        store.get_bytes("nope.tflite")
    with pytest.raises(ObjectNotFound):
        store.local_path("nope.tflite")
    assert not store.exists("nope.tflite")
    store.put_bytes("dir/file.bin", b"x")
    # A folder is not an object.
    with pytest.raises(ObjectNotFound):
        store.get_bytes("dir")
    assert not store.exists("dir")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("dir/file.bin/deeper")
    with pytest.raises(ObjectNotFound):
        store.age_seconds("dir")
    with pytest.raises(ObjectNotFound):
        store.age_seconds("nope.tflite")


def test_list_and_delete(store: LocalObjectStore) -> None:
    for key in ("m/a/1.tflite", "m/a/2.tflite", "m/ab/3.tflite", "m/b.json", "other.bin"):
        store.put_bytes(key, key.encode())
    assert store.list_keys("m/a/") == ["m/a/1.tflite", "m/a/2.tflite"]
    assert store.list_keys("m/a") == ["m/a/1.tflite", "m/a/2.tflite", "m/ab/3.tflite"]
    assert store.list_keys("m/") == ["m/a/1.tflite", "m/a/2.tflite", "m/ab/3.tflite", "m/b.json"]
    assert store.list_keys("") == sorted(["m/a/1.tflite", "m/a/2.tflite", "m/ab/3.tflite", "m/b.json", "other.bin"])
    assert store.list_keys("zzz/") == []
    assert store.list_keys("other.bin/") == []
    store.delete("m/a/1.tflite")
    store.delete("m/a/1.tflite")  # absent: no error
    store.delete("never/existed.bin")
    store.delete("m")  # a folder, not an object: nothing happens
    assert store.list_keys("m/a/") == ["m/a/2.tflite"]
    assert not store.exists("m/a/1.tflite")
    with pytest.raises(ValueError):
        store.list_keys("/m")
    with pytest.raises(ValueError):
        store.list_keys("m//")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_key_validation(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.download_url(key),
        lambda: store.local_path(key),
    ):
        with pytest.raises(ValueError):
            call()


def test_valid_keys() -> None:
    for key in ("a", "a/b/c.tflite", ".hidden", "a..b", "v1.2-rc_3/x"):
        assert validate_key(key) == key


def test_writes_leave_no_temp_files(store: LocalObjectStore, tmp_path: Path) -> None:
    for i in range(5):
        store.put_bytes(f"models/m{i}.tflite", os.urandom(1000))
    store.put_bytes("models/m0.tflite", b"overwritten")
    assert all_files(tmp_path / "objects") == [f"models/m{i}.tflite" for i in range(5)]


def test_failed_write_leaves_nothing(store: LocalObjectStore, tmp_path: Path) -> None:
    store.put_bytes("a", b"a file")
    with pytest.raises(StorageError, match="not a folder"):
        store.put_bytes("a/b", b"x")
    store.put_bytes("dir/x", b"x")
    with pytest.raises(StorageError, match="folder"):
        store.put_bytes("dir", b"x")
    assert all_files(tmp_path / "objects") == ["a", "dir/x"]


def test_readers_never_see_partial_writes(store: LocalObjectStore) -> None:
    size = 4 * 1024 * 1024
    versions = {b"A" * size, b"B" * size}
    store.put_bytes("big.bin", b"A" * size)
    path = store.local_path("big.bin")
    stop = threading.Event()
    reads = [0]
    bad: list[int] = []

    def read() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            reads[0] += 1
            if data not in versions:
                bad.append(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(12):
            store.put_bytes("big.bin", (b"B" if i % 2 == 0 else b"A") * size)
    finally:
        stop.set()
        reader.join()
    assert reads[0] > 0
    assert bad == []
    assert store.list_keys("") == ["big.bin"]


def test_signed_download_url(tmp_path: Path) -> None:
    store = make_store(tmp_path, link_ttl_seconds=600)
    url = store.download_url("users/u1/models/hand.tflite")
    parsed = urlparse(url)
    assert f"{parsed.scheme}://{parsed.netloc}" == BASE_URL and not parsed.query
    assert url.rsplit("/", 1)[1] == "hand.tflite"  # what Android names the saved file
    prefix, expires, sig, key = parsed.path.lstrip("/").split("/", 3)
    assert prefix == "dl" and key == "users/u1/models/hand.tflite"
    verify_link("users/u1/models/hand.tflite", expires, sig, SECRET)
    store.authorize_download("users/u1/models/hand.tflite", expires, sig)
    with pytest.raises(LinkInvalid):
        store.authorize_download("users/u1/models/other.tflite", expires, sig)
    with pytest.raises(LinkInvalid):
        store.authorize_download("users/u1/models/hand.tflite", None, None)
    with pytest.raises(LinkExpired):
        verify_link("users/u1/models/hand.tflite", expires, sig, SECRET, now=int(expires) + 1)


def test_signed_link_expires_with_store_clock(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = LocalObjectStore(
        tmp_path / "objects",
        public_url=BASE_URL + "/",
        signing_secret=SECRET,
        link_ttl_seconds=60,
        clock=lambda: now[0],
    )
    _, expires, sig, _ = urlparse(store.download_url("a.bin")).path.lstrip("/").split("/", 3)
    assert expires == "1000060"
    store.authorize_download("a.bin", expires, sig)
    now[0] += 60
    with pytest.raises(LinkExpired):
        store.authorize_download("a.bin", expires, sig)


def test_public_download_url(tmp_path: Path) -> None:
    store = make_store(tmp_path, public_links=True)
    url = store.download_url("users/u1/models/hand.tflite")
    assert url == f"{BASE_URL}/files/users/u1/models/hand.tflite"
    store.authorize_download("users/u1/models/hand.tflite", None, None)


def test_check_writable(store: LocalObjectStore, tmp_path: Path) -> None:
    store.check_writable()
    assert store.list_keys("") == []
    assert all_files(tmp_path / "objects") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_check_writable_read_only(tmp_path: Path) -> None:
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects").chmod(0o500)
    try:
        with pytest.raises(StorageError, match="not usable"):
            make_store(tmp_path).check_writable()
    finally:
        (tmp_path / "objects").chmod(0o700)


def test_check_writable_blocked(tmp_path: Path) -> None:
    (tmp_path / "objects").write_text("a file where the folder should be")
    with pytest.raises(StorageError, match=r"not usable.*is not a folder"):
        make_store(tmp_path).check_writable()


def test_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="signing secret"):
        make_store(tmp_path, signing_secret=b"")
    make_store(tmp_path, signing_secret=b"", public_links=True)
    with pytest.raises(StorageError, match="absolute"):
        make_store(tmp_path, public_url="127.0.0.1:8000")
    with pytest.raises(StorageError, match="unknown storage backend"):
        make_store(tmp_path, backend="s3")


class FlakyDisk(LocalObjectStore):
    """Fails the first `failures` writes with an I/O error, as a flaky disk would."""

    failures = 2
    writes = 0

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        self.writes += 1
        if self.writes <= self.failures:
            from ghostouch.storage.local import _os_failure

            raise _os_failure(OSError(errno.EIO, "Input/output error"), "cannot write")
        super()._write(key, data, content_type)


def test_store_retries_transient_failures(tmp_path: Path) -> None:
    sleeps: list[float] = []
    store = FlakyDisk(tmp_path / "objects", public_url=BASE_URL, signing_secret=SECRET, sleep=sleeps.append)
    store.put_bytes("a.bin", b"data")
    assert store.writes == 3
    assert len(sleeps) == 2
    assert store.get_bytes("a.bin") == b"data"

    store.failures, store.writes = 10, 0
    with pytest.raises(StorageError, match=r"after 4 attempts.*Input/output error"):
        store.put_bytes("b.bin", b"data")
    assert store.writes == 4
    assert not store.exists("b.bin")


def test_temporary_files_of_unfinished_writes_are_removed_once_stale(store: LocalObjectStore, tmp_path: Path) -> None:
    """A process killed while writing leaves its temporary file; the storage sweep removes those
    older than any write can take, and nothing else."""
    store.put_bytes("models/m1/aa/m1.tflite", b"model")
    folder = store.local_path("models/m1/aa/m1.tflite").parent
    stale, fresh = folder / ".m1.tflite.abc123~tmp", folder / ".m1.tflite.def456~tmp"
    stale.write_bytes(b"half a model")
    fresh.write_bytes(b"a write under way")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert store.remove_stale_temp_files(600) == ["models/m1/aa/.m1.tflite.abc123~tmp"]
    assert not stale.exists() and fresh.exists() and store.get_bytes("models/m1/aa/m1.tflite") == b"model"
    assert store.remove_stale_temp_files(600) == []
