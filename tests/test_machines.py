"""API and workers as on several machines (external Redis and PostgreSQL): what each command needs
on its own disk, what it warns of at start, and how workers are told apart."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from ghostouch.embedded_broker import EmbeddedBroker
from ghostouch.engine import hands
from ghostouch.registry.db import migrate
from tests.conftest import Service, free_port, poll_like_android, service_env, wait_until
from tests.gcs_fixtures import Emulator, ServiceAccount
from tests.test_firebase_flow import firebase_env
from tests.test_registry import _postgres_url

SECRET = "s" * 40
LOCAL_STORAGE_WARNING = "GHOSTOUCH_STORAGE=local with an external broker and database"
SIGNING_WARNING = "GHOSTOUCH_SIGNING_SECRET is unset"


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
    generated key, and warns that other API machines would refuse its links."""
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
    api_log = (tmp_path / "api.log").read_text()
    assert SIGNING_WARNING not in api_log and LOCAL_STORAGE_WARNING not in api_log, api_log
    (tmp_path / "api.log").unlink()
    svc.env = env  # no GHOSTOUCH_SIGNING_SECRET
    svc.start_api()
    try:
        assert httpx.get(f"{svc.url}/models/base_v1").status_code == 200
    finally:
        svc.stop_all()
    assert (missing / "signing.key").is_file() and missing.stat().st_mode & 0o777 == 0o700
    api_log = (tmp_path / "api.log").read_text()
    assert SIGNING_WARNING in api_log and "refuse each other's links (403)" in api_log, api_log


def test_local_storage_on_machines_that_do_not_share_it_is_warned_of_and_named_in_failures(
    tmp_path: Path, broker: str, postgres: str
) -> None:
    """API and worker with local storage in data directories of their own (as on two machines):
    both warn at start, and the job fails saying why the worker cannot find the frames, not
    asking the user to post them again (which would fail the same way)."""
    port = free_port()
    api_env = {**service_env(tmp_path / "api-data", broker, port), "GHOSTOUCH_DATABASE_URL": postgres}
    worker_env = {**api_env, "GHOSTOUCH_DATA_DIR": str(tmp_path / "worker-data")}
    api = Service(tmp_path / "api-data", api_env, port, logs=tmp_path)
    worker = Service(tmp_path / "worker-data", worker_env, port, logs=tmp_path)
    worker.start_worker()  # provisions base_v1 in its own storage
    api.start_api()
    try:
        frames = hands.generate_recording("call", 40, np.random.default_rng(4), handedness=1.0).tolist()
        body = {"model_code": "base_v1", "gesture": "call", "landmarks": frames}
        answers: list[httpx.Response] = []

        def accepted() -> bool:  # 503 while the worker provisions base_v1
            answers.append(httpx.post(f"{api.url}/train", json=body, timeout=30))
            return answers[-1].status_code != 503

        wait_until(accepted, 300, "base_v1 was never provisioned")
        assert answers[-1].status_code == 202, answers[-1].text
        status, _ = poll_like_android(api.url, answers[-1].json()["task_id"], timeout=300)
    finally:
        worker.stop_all()
        api.stop_all()
    assert status["status"] == "FAILURE", status
    reason = status["error_info"]
    assert "cannot see the storage the API" in reason and "post them again" not in reason, reason
    assert "will not help" in reason and not (status.get("error_detail") or {}).get("retryable"), status
    api_log, worker_log = (tmp_path / "api.log").read_text(), (tmp_path / "worker.log").read_text()
    for log in (api_log, worker_log):
        assert LOCAL_STORAGE_WARNING in log and "GHOSTOUCH_STORAGE=firebase" in log, log
    assert SIGNING_WARNING in api_log and SIGNING_WARNING not in worker_log  # workers sign no links


def _in_own_pid_namespace() -> list[str] | None:
    """The command prefix that runs a process as pid 1 of a PID namespace of its own, as a
    container's first process is; None where this machine does not allow it."""
    command = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]
    try:
        done = subprocess.run([*command, "true"], capture_output=True, timeout=10, check=False)
    except OSError:
        return None
    return command if done.returncode == 0 else None


def test_workers_in_containers_sharing_a_host_name_are_told_apart(tmp_path: Path, broker: str) -> None:
    """Two workers given the same --name, each pid 1 of its own PID namespace on one host (two
    containers sharing a host name): both answer and count as warm where /readyz looks, and
    stopping one leaves the other warm."""
    from ghostouch.config import Settings
    from ghostouch.jobs.celery_app import make_celery, warm_nodes

    prefix = _in_own_pid_namespace()
    if prefix is None:
        pytest.skip("cannot run a process in a PID namespace of its own here (unshare)")
    name = "twin"
    twins = []
    for i in range(2):
        env = service_env(tmp_path / f"data{i}", broker, free_port())
        log = (tmp_path / f"twin{i}.log").open("wb")
        command = [sys.executable, "-m", "ghostouch.cli", "worker", "--no-ensure-base", "--name", name]
        twins.append(subprocess.Popen([*prefix, *command], env=env, stdout=log, stderr=subprocess.STDOUT))
    app = make_celery(Settings(broker_url=broker))

    def answering() -> tuple[list[str], set[str]]:
        """As /readyz counts them (api/health.py): nodes that answer a ping, and the warm ones."""
        replies = app.control.ping(timeout=1.0) or []
        nodes = sorted(node for reply in replies for node in reply)
        return nodes, warm_nodes(app, nodes)

    try:
        wait_until(lambda: len(answering()[1]) == 2, 180, "two warm workers never answered")
        nodes, _ = answering()
        assert [node.split("-")[1] for node in nodes] == ["1", "1"], nodes  # each its namespace's pid 1
        _stop(twins[0])  # a graceful stop, as `docker stop` asks
        left, warm = answering()
        assert len(left) == 1 and warm == set(left), (left, warm)  # the other is still warm
    finally:
        for twin in twins:
            _stop(twin)
        app.close()


def _stop(namespace: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the worker inside (unshare itself ignores it), SIGKILL after 30 s (unshare's
    --kill-child takes the worker along)."""
    if namespace.poll() is None:
        for worker in psutil.Process(namespace.pid).children():
            worker.send_signal(signal.SIGTERM)
    try:
        namespace.wait(timeout=30)
    except subprocess.TimeoutExpired:
        namespace.kill()
        namespace.wait()
