"""API and workers as on several machines (external Redis and PostgreSQL): what each command needs
on its own disk."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghostouch.embedded_broker import EmbeddedBroker
from ghostouch.registry.db import migrate
from tests.conftest import Service, free_port, service_env
from tests.gcs_fixtures import Emulator, ServiceAccount
from tests.test_firebase_flow import firebase_env
from tests.test_registry import _postgres_url

SECRET = "s" * 40


@pytest.fixture
def broker() -> Iterator[str]:
    """A Redis of the test's own: the suite's databases may serve another run's workers, which
    would take these tests' jobs (and these workers theirs)."""
    with tempfile.TemporaryDirectory(prefix="gt-") as folder:  # a short path: a unix socket's is limited
        redis_server = EmbeddedBroker(Path(folder) / "redis.sock")
        redis_server.start()
        try:
            yield f"redis+socket://{redis_server.socket_path}"
        finally:
            redis_server.stop()


@pytest.fixture
def postgres() -> Iterator[str]:
    pg = _postgres_url()
    yield next(pg)
    next(pg, None)


def test_firebase_and_postgres_need_no_data_directory(
    tmp_path: Path, broker: str, postgres: str, gcs_emulator: Emulator, service_account: ServiceAccount
) -> None:
    """Nothing lives in the data directory then: `storage sweep` and an API given the signing
    secret run on a host without one (and make none); an API without the secret makes it for its
    generated key."""
    missing = tmp_path / "no-such-dir"
    env = {**service_env(missing, broker, free_port()), "GHOSTOUCH_DATABASE_URL": postgres}
    env = firebase_env(env, gcs_emulator, service_account)
    svc = Service(missing, {**env, "GHOSTOUCH_SIGNING_SECRET": SECRET}, int(env["GHOSTOUCH_PORT"]), logs=tmp_path)
    migrate(postgres)  # a registry for the sweep (it never sweeps against a database without one)
    swept = svc.cli("storage", "sweep", "--wait", "0", "--min-age", "999999")
    assert swept.returncode == 0, swept.stderr
    assert "deleted 0 model file(s)" in swept.stdout and not missing.exists()
    ensured = svc.cli("base", "ensure")
    assert ensured.returncode == 0 and not missing.exists(), ensured.stderr
    svc.start_api()
    try:
        assert httpx.get(f"{svc.url}/models/base_v1").status_code == 200 and not missing.exists()
    finally:
        svc.stop_all()
    svc.env = env  # no GHOSTOUCH_SIGNING_SECRET
    svc.start_api()
    try:
        assert httpx.get(f"{svc.url}/models/base_v1").status_code == 200
    finally:
        svc.stop_all()
    assert (missing / "signing.key").is_file() and missing.stat().st_mode & 0o777 == 0o700
