"""What an operator meets: settings that cannot work stop a command with one line, and a registry
database that goes away under a running API gives clients a 503 they can retry."""

from __future__ import annotations

import functools
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from ghostouch.engine import hands
from tests.conftest import OPERATOR, Service, free_port, poll_like_android, service_env, spare_redis_url, wait_until
from tests.gcs_fixtures import Gateway
from tests.test_registry import _postgres_url

CLOSED_PORT_DB = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"


class _KeepAliveHttp(socketserver.BaseRequestHandler):
    """Answers whatever arrives as an HTTP/1.1 server does to a request it cannot parse, and keeps
    the connection open (as uvicorn does): something other than Redis at a broker URL."""

    def handle(self) -> None:
        self.request.recv(1024)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        time.sleep(5)


@functools.cache
def http_server_port() -> int:
    """Started on first use only (a test that names `{http_port}` in its setting)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _KeepAliveHttp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


@pytest.mark.parametrize(
    ("command", "setting", "value", "message"),
    [
        ("api", "GHOSTOUCH_PORT", "abc", "GHOSTOUCH_PORT='abc': Input should be a valid integer"),
        ("api", "GHOSTOUCH_PORT", "70000", "GHOSTOUCH_PORT='70000': Input should be less than or equal to 65535"),
        ("serve", "GHOSTOUCH_WORKERS", "0", "GHOSTOUCH_WORKERS='0': Input should be greater than or equal to 1"),
        ("api", "GHOSTOUCH_LOG_LEVEL", "loud", "GHOSTOUCH_LOG_LEVEL='LOUD': Input should be 'DEBUG'"),
        ("api", "GHOSTOUCH_BROKER_URL", "http://127.0.0.1:6379/9", "GHOSTOUCH_BROKER_URL='http://127.0.0.1:6379/9'"),
        ("worker", "GHOSTOUCH_MAX_FRAMES_PER_GESTURE", "0", "greater than or equal to 20"),
        ("worker", "GHOSTOUCH_JOB_TIME_LIMIT_SECONDS", "0", "GHOSTOUCH_JOB_TIME_LIMIT_SECONDS='0': Input should be"),
        ("worker", "GHOSTOUCH_BROKER_URL", "redis://127.0.0.1:6379/x", "cannot use the broker (Database is int"),
        ("api", "GHOSTOUCH_BROKER_URL", "redis://127.0.0.1:abc/9", "cannot use the broker (Port could not be"),
        ("worker", "GHOSTOUCH_BROKER_URL", "redis://127.0.0.1:6379/99", "cannot use the broker (DB index is out of"),
        ("api", "GHOSTOUCH_BROKER_URL", "redis://:pw@127.0.0.1:6379/x", "GHOSTOUCH_BROKER_URL='redis://:***@127"),
        ("storage", "GHOSTOUCH_PUBLIC_URL", "127.0.0.1:8111", "GHOSTOUCH_PUBLIC_URL='127.0.0.1:8111': Value error"),
        ("api", "GHOSTOUCH_PUBLIC_URL", "http://h/a path", "GHOSTOUCH_PUBLIC_URL='http://h/a path': Value error"),
        ("worker", "GHOSTOUCH_PUBLIC_URL", "http://h:abc", "has a port that is not a number"),
        ("api", "GHOSTOUCH_PUBLIC_URL", "https://h:0", "has a port that is not a number from 1"),
        ("api", "GHOSTOUCH_PUBLIC_URL", "https://u:pw@h", "must not hold a user name or password"),
        ("api", "GHOSTOUCH_BROKER_URL", "redis://127.0.0.1:{http_port}/8", "cannot use the broker (Protocol"),
        ("api", "GHOSTOUCH_MAX_WAITING_JOBS", "-1", "GHOSTOUCH_MAX_WAITING_JOBS='-1': Input should be greater"),
        ("api", "GHOSTOUCH_LINK_TTL_SECONDS", "-100", "GHOSTOUCH_LINK_TTL_SECONDS='-100': Input should be greater"),
        ("api", "GHOSTOUCH_LINK_TTL_SECONDS", "99999999999999999", "Input should be less than or equal to 315360000"),
        ("api", "GHOSTOUCH_SIGNING_SECRET", "abc", "GHOSTOUCH_SIGNING_SECRET='***': Value error, must be at least 32"),
        ("worker", "GHOSTOUCH_OPERATOR_TOKEN", "short-token", "GHOSTOUCH_OPERATOR_TOKEN='***': Value error, must be"),
        ("api", "GHOSTOUCH_DATABASE_URL", CLOSED_PORT_DB, "cannot use the registry database postgresql://"),
        (
            "api",
            "GHOSTOUCH_DATABASE_URL",
            "notaurl",
            "GHOSTOUCH_DATABASE_URL='notaurl': Value error, must be a Postgre",
        ),
        ("worker", "GHOSTOUCH_STORAGE", "firebase", "GHOSTOUCH_STORAGE=firebase: the Firebase backend needs"),
        ("storage", "GHOSTOUCH_STORAGE", "s3", "GHOSTOUCH_STORAGE='s3': Input should be 'local' or 'firebase'"),
        ("api", "GHOSTOUCH_HOST", "999.1.1.1", "GHOSTOUCH_HOST='999.1.1.1', GHOSTOUCH_PORT="),
        ("storage", "GHOSTOUCH_DATABASE_URL", "postgresql://u:pw@127.0.0.1:abc/x", "u:***@127.0.0.1:abc/x"),
        ("storage", "GHOSTOUCH_DATABASE_URL", "mysql://u:pw@127.0.0.1:1/x", "must be a PostgreSQL or SQLite URL"),
        ("worker", "GHOSTOUCH_DATABASE_URL", "postgresql://u:pw@127.0.0.1:abc/x", "cannot use the registry database"),
    ],
)
def test_settings_that_cannot_work_stop_the_command_with_one_line(
    tmp_path: Path, redis_url: str, command: str, setting: str, value: str, message: str
) -> None:
    env = service_env(tmp_path / "data", spare_redis_url(redis_url), free_port())
    env = {k: v for k, v in env.items() if not k.startswith("FIREBASE_")}
    env[setting] = value.replace("{http_port}", str(http_server_port())) if "{http_port}" in value else value
    (tmp_path / "data").mkdir()
    args = {"storage": ["storage", "sweep", "--wait", "0"]}.get(command, [command])
    done = subprocess.run(
        [sys.executable, "-m", "ghostouch.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the log lines of what went well
    assert "alembic" not in done.stderr, done.stderr  # its start-up chatter is not an operator's business
    assert last.startswith(f"ghostouch {' '.join(args[:2]) if command == 'storage' else command}: "), done.stderr
    assert message in last and ":pw@" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert setting not in ("GHOSTOUCH_SIGNING_SECRET", "GHOSTOUCH_OPERATOR_TOKEN") or value not in done.stderr


def test_a_data_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    env = service_env(tmp_path / "a-file" / "data", None, free_port())
    done = subprocess.run(
        [sys.executable, "-m", "ghostouch.cli", "base", "ensure"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "GHOSTOUCH_DATA_DIR=" in done.stderr and "Not a directory" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def api_through_a_gateway(tmp_path: Path, redis_url: str) -> Iterator[tuple[Service, Gateway]]:
    """`ghostouch api` whose PostgreSQL registry is reached through a relay the test can cut."""
    pg = _postgres_url()
    db_url = next(pg)
    gateway = Gateway("127.0.0.1:5432")
    relayed = db_url.replace("127.0.0.1:5432", gateway.url.removeprefix("http://"))
    port = free_port()
    env = {**service_env(tmp_path / "data", spare_redis_url(redis_url), port), "GHOSTOUCH_DATABASE_URL": relayed}
    svc = Service(tmp_path / "data", env, port, logs=tmp_path)
    svc.data_dir.mkdir()
    svc.start_api()
    try:
        wait_until(lambda: httpx.get(f"{svc.url}/healthz").status_code == 200, 60, "the API never started")
        yield svc, gateway
    finally:
        svc.stop_all()
        gateway.cut()
        next(pg, None)


def test_a_registry_database_that_goes_away_gives_503(api_through_a_gateway: tuple[Service, Gateway]) -> None:
    svc, gateway = api_through_a_gateway
    assert httpx.get(f"{svc.url}/models", headers=OPERATOR).status_code == 200
    assert httpx.get(f"{svc.url}/status/nope").status_code == 404
    frames = hands.generate_recording("one", 30, np.random.default_rng(0), handedness=1.0).tolist()
    body = {"model_code": "base_v1", "gesture": "g", "landmarks": frames}
    early = httpx.post(f"{svc.url}/train", json=body, timeout=60)  # no worker has provisioned base_v1 yet
    assert early.status_code == 503 and "base_v1 is not provisioned yet" in early.json()["detail"]
    gateway.cut()
    for answer in (
        httpx.get(f"{svc.url}/models", timeout=60, headers=OPERATOR),
        httpx.get(f"{svc.url}/status/nope", timeout=60),
        httpx.get(f"{svc.url}/models/base_v1/labels", timeout=60),
        httpx.post(f"{svc.url}/train", json=body, timeout=60),
    ):
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"detail": "the model registry is unavailable; please retry"}
    log = (svc.logs / "api.log").read_text()  # type: ignore[operator]
    assert "registry database unavailable" in log and "Traceback" not in log


def test_a_broker_that_stops_answering_gives_503_in_time(tmp_path: Path, redis_url: str) -> None:
    """The API's Redis takes requests and never answers: `POST /train` answers 503 within what a
    phone's HTTP client waits (10 s), and the job it recorded is marked for a retry."""
    broker = spare_redis_url(redis_url)
    address = broker.removeprefix("redis://").split("/", 1)[0]
    gateway = Gateway(address)
    port = free_port()
    relayed = broker.replace(address, gateway.url.removeprefix("http://"))
    svc = Service(tmp_path / "data", {**service_env(tmp_path / "data", relayed, port)}, port, logs=tmp_path)
    svc.data_dir.mkdir()
    assert svc.cli("base", "ensure").returncode == 0  # base_v1, as a worker would provision it
    svc.start_api()
    rng = np.random.default_rng(3)
    try:
        first = hands.generate_recording("one", 40, rng, handedness=1.0).tolist()
        body = {"model_code": "base_v1", "gesture": "one", "landmarks": first, "allow_duplicate": True}
        assert httpx.post(f"{svc.url}/train", json=body, timeout=30).status_code == 202
        gateway.hang()
        body["landmarks"] = hands.generate_recording("one", 40, rng, handedness=1.0).tolist()
        started = time.monotonic()
        stuck = httpx.post(f"{svc.url}/train", json=body, timeout=60)
        waited = time.monotonic() - started
        assert stuck.status_code == 503 and stuck.json()["detail"] == "the training queue is unavailable; please retry"
        assert stuck.headers["retry-after"] == "10"
        print(f"POST /train against a hanging broker: 503 after {waited:.1f} s")
        assert waited < 10, waited
    finally:
        svc.stop_all()
        gateway.cut()


def test_a_full_queue_refuses_new_jobs_with_retry_after(tmp_path: Path, redis_url: str) -> None:
    """With `GHOSTOUCH_MAX_WAITING_JOBS` jobs waiting and no worker taking them, a new job is
    refused with 503 and Retry-After, its frames not stored; a retry of an accepted request still
    answers its job, and a job that starts frees a place."""
    broker = spare_redis_url(redis_url)
    redis.Redis.from_url(broker).flushdb()
    port = free_port()
    env = {**service_env(tmp_path / "data", broker, port), "GHOSTOUCH_MAX_WAITING_JOBS": "2"}
    svc = Service(tmp_path / "data", env, port, logs=tmp_path)
    svc.data_dir.mkdir()
    assert svc.cli("base", "ensure").returncode == 0
    svc.start_api()
    rng = np.random.default_rng(5)

    def body(gesture: str) -> dict[str, object]:
        frames = hands.generate_recording("one", 30, rng, handedness=1.0).tolist()
        return {"model_code": "base_v1", "gesture": gesture, "landmarks": frames}

    def post(request: dict[str, object], key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return httpx.post(f"{svc.url}/train", json=request, headers=headers, timeout=30)

    try:
        first_body = body("first")
        first = post(first_body, key="k-first")
        assert first.status_code == 202 and post(body("second")).status_code == 202
        samples = sorted((svc.data_dir / "objects" / "samples").rglob("*"))
        refused = post(body("third"))
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "60"
        assert refused.json()["detail"] == (
            "the training queue is full (2 jobs are waiting for a worker); please retry in a minute"
        )
        assert sorted((svc.data_dir / "objects" / "samples").rglob("*")) == samples  # nothing stored for it
        frames = hands.generate_recording("one", 30, rng, handedness=1.0).tolist()
        more = httpx.post(f"{svc.url}/models/base_v1/gestures/rock/frames", json={"landmarks": frames}, timeout=30)
        assert more.status_code == 503 and "queue is full" in more.json()["detail"]
        fewer = httpx.delete(f"{svc.url}/models/base_v1/gestures/rock", timeout=30)
        assert fewer.status_code == 503 and fewer.headers["retry-after"] == "60"
        jobs = httpx.get(f"{svc.url}/models/base_v1/jobs", timeout=30, headers=OPERATOR).json()
        assert [job["gesture"] for job in jobs] == ["first", "second"]  # no job recorded for the refused
        retry = post(first_body, key="k-first")
        assert retry.status_code == 202 and retry.json()["task_id"] == first.json()["task_id"]
        svc.start_worker()  # takes the waiting jobs: places free up
        wait_until(lambda: post(body("third")).status_code == 202, 120, "the queue never took a job again")
    finally:
        svc.stop_all()
        redis.Redis.from_url(broker).flushdb()


def test_a_base_whose_model_file_is_gone_is_not_ready_and_fails_jobs_saying_whose_problem(
    tmp_path: Path, redis_url: str
) -> None:
    """A bucket emptied (or another one configured) under a registry that names base_v1: `/readyz`
    says so instead of `ready`, and a fresh install's job tells the user it is the server's fault
    (it cannot "train from another model": base_v1 is all it knows)."""
    broker = spare_redis_url(redis_url)
    redis.Redis.from_url(broker).flushdb()
    port = free_port()
    svc = Service(tmp_path / "data", service_env(tmp_path / "data", broker, port), port, logs=tmp_path)
    svc.data_dir.mkdir()
    svc.start_api()
    svc.start_worker()  # provisions base_v1
    try:
        svc.wait_ready()
        assert httpx.get(f"{svc.url}/readyz").json()["checks"]["base_v1"] == "ok"
        (model_file,) = (svc.data_dir / "objects" / "models" / "base_v1").rglob("base_v1.tflite")
        model_file.unlink()
        answer = httpx.get(f"{svc.url}/readyz", timeout=10)
        assert answer.status_code == 503 and answer.json()["ready"] is False
        assert answer.json()["checks"]["base_v1"].startswith("registered, but its model file models/base_v1/")
        frames = hands.generate_recording("call", 40, np.random.default_rng(2), handedness=1.0).tolist()
        r = httpx.post(f"{svc.url}/train", json={"model_code": "base_v1", "gesture": "call", "landmarks": frames})
        body, _ = poll_like_android(svc.url, r.json()["task_id"])
        assert body["status"] == "FAILURE" and body["error_info"] == (
            "the server's base model files are missing from its storage; please try again later"
        ), body
    finally:
        svc.stop_all()


def test_listings_answer_403_where_no_operator_token_is_set(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = service_env(tmp_path / "data", spare_redis_url(redis_url), port)
    del env["GHOSTOUCH_OPERATOR_TOKEN"]
    svc = Service(tmp_path / "data", env, port, logs=tmp_path)
    svc.data_dir.mkdir()
    svc.start_api()
    try:
        for path in ("/models", "/models/base_v1/jobs"):
            refused = httpx.get(f"{svc.url}{path}", headers=OPERATOR)
            assert refused.status_code == 403 and "set GHOSTOUCH_OPERATOR_TOKEN on the API" in refused.json()["detail"]
    finally:
        svc.stop_all()
