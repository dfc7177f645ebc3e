"""Fixtures for the storage tests: a real Cloud Storage emulator and a throwaway service account."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

EMULATOR_BUCKET = "ghostouch-test-bucket"
EMULATOR_PROJECT = "ghostouch-test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> None:
    """Fail under CI (CI=true), skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@dataclass
class TokenTrap:
    """A local HTTP server standing in for Google's token endpoint; records every hit."""

    url: str
    hits: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceAccount:
    path: Path
    email: str
    key_id: str
    public_key: rsa.RSAPublicKey


@dataclass(frozen=True)
class Emulator:
    url: str
    bucket: str
    project: str
    log_path: Path


@pytest.fixture(scope="session")
def token_trap() -> Iterator[TokenTrap]:
    trap = TokenTrap(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            trap.hits.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.end_headers()

        do_GET = _record
        do_POST = _record

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trap.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    yield trap
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def service_account(tmp_path_factory: pytest.TempPathFactory, token_trap: TokenTrap) -> ServiceAccount:
    """A service-account JSON with a fresh RSA key; its token_uri points at the trap."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    email = f"storage-test@{EMULATOR_PROJECT}.iam.gserviceaccount.com"
    key_id = uuid.uuid4().hex
    info = {
        "type": "service_account",
        "project_id": EMULATOR_PROJECT,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": email,
        "client_id": "1234567890",
        "auth_uri": token_trap.url,
        "token_uri": token_trap.url,
    }
    path = tmp_path_factory.mktemp("service-account") / "service-account.json"
    path.write_text(json.dumps(info))
    return ServiceAccount(path=path, email=email, key_id=key_id, public_key=key.public_key())


def _emulator_command() -> list[str]:
    script = Path(sys.executable).parent / "gcp-storage-emulator"
    if script.exists():
        return [str(script)]
    found = shutil.which("gcp-storage-emulator")
    if found:
        return [found]
    return [sys.executable, "-m", "gcp_storage_emulator"]


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """`gcp-storage-emulator` on a free loopback port, in memory, with the test bucket."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    command = [
        *_emulator_command(),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        EMULATOR_BUCKET,
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as exc:
            unavailable(f"cannot start the storage emulator ({command[0]}): {exc}")
            raise  # unreachable: unavailable() raises
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                unavailable(f"the storage emulator exited with {proc.returncode}: {tail}")
            try:
                if httpx.get(f"{url}/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                unavailable(f"the storage emulator did not answer on {url} in 30 s: {tail}")
            time.sleep(0.1)
        yield Emulator(url=url, bucket=EMULATOR_BUCKET, project=EMULATOR_PROJECT, log_path=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


FirebaseStoreFactory = Callable[..., Any]


@pytest.fixture
def firebase_store_factory(
    gcs_emulator: Emulator,
    service_account: ServiceAccount,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FirebaseStoreFactory]:
    """Build Firebase stores talking to the emulator; `overrides` go to StorageSettings."""
    from ghostouch.storage import StorageSettings, build_store

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    stores: list[Any] = []

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "backend": "firebase",
            "data_dir": tmp_path,
            "public_url": "http://127.0.0.1:1",
            "signing_secret": b"unused",
            "firebase_credentials": service_account.path,
            "firebase_bucket": gcs_emulator.bucket,
            "firebase_project_id": EMULATOR_PROJECT,
            "retry_attempts": 3,
            "retry_base_delay": 0.01,
        }
        values.update(overrides)
        store = build_store(StorageSettings(**values))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def firebase_store(firebase_store_factory: FirebaseStoreFactory) -> Any:
    return firebase_store_factory()


@pytest.fixture
def unique_prefix() -> str:
    """A key prefix no other test uses (the emulator is shared by the session)."""
    return f"t-{uuid.uuid4().hex[:12]}"


class Gateway:
    """A TCP relay on a loopback port in front of `target` ("host:port"), which a test can cut:
    storage that goes away under a running service, without stopping the shared emulator."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = True
        self._hanging = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if not self._open:
                    client.close()
                    continue
                if self._hanging:  # accepted, never answered
                    self._sockets.append(client)
                    continue
                upstream = socket.create_connection(self._target)
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._hanging:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def hang(self, hanging: bool = True) -> None:
        """From now on (until `hang(False)`) nothing is relayed: requests, on new connections or
        open ones, are taken and never answered, as by a server that stopped responding."""
        self._hanging = hanging

    def cut(self) -> None:
        """From now on every connection is refused, and open ones are dropped."""
        with self._lock:
            self._open = False
            self._server.close()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
