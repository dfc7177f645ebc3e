"""Shared fixtures: a real Redis, real `ghostouch api` + `ghostouch worker` processes, real data."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.gcs_fixtures"]
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_REDIS_DB = 13
SPARE_REDIS_DB = 14  # tests that need a broker of their own, apart from the session service's


def spare_redis_url(redis_url: str) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{SPARE_REDIS_DB}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _redis_binary() -> str | None:
    from ghostouch.embedded_broker import find_redis_server

    try:
        return find_redis_server()
    except RuntimeError:
        return shutil.which("redis-server")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The machine's Redis at 127.0.0.1:6379 (own database index), else a redis-server we start."""
    import redis

    proc = None
    port = 6379
    if not _redis_answers(port):
        binary = _redis_binary()
        if binary is None:
            if IN_CI:
                pytest.fail("no Redis at 127.0.0.1:6379 and no redis-server binary to start one")
            pytest.skip("no Redis reachable and no redis-server binary available")
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(port):
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("started redis-server but it does not answer")
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/{TEST_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`: skipped (with the reason) in a user's clone, required under CI=true."""
    if not SHARED_DATA.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but the real recordings are missing at {SHARED_DATA}")
        pytest.skip(f"real landmark recordings not found at {SHARED_DATA} (only in the dev workspace)")
    return SHARED_DATA


def read_frames_csv(path: Path) -> dict[str, np.ndarray]:
    per_label: dict[str, list[list[float]]] = {}
    with path.open(newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            per_label.setdefault(row[0], []).append([float(v) for v in row[1:]])
    return {k: np.asarray(v, dtype=np.float32) for k, v in per_label.items()}


@dataclass
class Service:
    """`ghostouch api` and `ghostouch worker` as separate processes sharing a Redis broker."""

    data_dir: Path
    env: dict[str, str]
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ghostouch.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str, *args: str) -> None:
        assert self.logs is not None
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "ghostouch.cli", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_api(self) -> None:
        self.start("api", "api", "--port", str(self.port))
        wait_until(lambda: get_ok(f"{self.url}/healthz"), 30, "API did not start")

    def start_worker(self, name: str = "worker") -> None:
        self.start(name, "worker", "--name", name)

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until(lambda: get_ok(f"{self.url}/readyz"), timeout, "service never became ready")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def start_serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """`ghostouch serve` as a process, its output in `log` (stop it with SIGINT, as Ctrl-C)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ghostouch.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(message)


OPERATOR_TOKEN = "test-operator-token-" + "0" * 16
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}  # for the operator's listings


def service_env(data_dir: Path, redis_url: str | None, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTOUCH_")}
    env.update(
        {
            "GHOSTOUCH_DATA_DIR": str(data_dir),
            "GHOSTOUCH_PORT": str(port),
            "GHOSTOUCH_HOST": "127.0.0.1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "GHOSTOUCH_REQUEUE_AFTER_SECONDS": "1",
            "GHOSTOUCH_OPERATOR_TOKEN": OPERATOR_TOKEN,
        }
    )
    if redis_url:
        env["GHOSTOUCH_BROKER_URL"] = redis_url
    return env


@pytest.fixture(scope="session")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("service-data")
    port = free_port()
    svc = Service(data_dir, service_env(data_dir, redis_url, port), port, logs=data_dir)
    svc.start_worker()
    svc.start_api()
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop_all()


def poll_like_android(url: str, task_id: str, interval: float = 0.2, timeout: float = 120) -> tuple[dict, list[str]]:
    """Poll /status until a final state; returns the last body and every status seen."""
    legal = {"PENDING", "PROGRESS", "SUCCESS", "FAILURE", "DUPLICATE"}
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/status/{task_id}", timeout=10).json()
        assert body["status"] in legal, f"illegal status {body['status']!r}"
        assert set(body) >= {"task_id", "status", "progress", "result", "error_info"}
        assert isinstance(body["progress"]["current_step"], str)
        seen.append(body["status"])
        if body["status"] not in ("PENDING", "PROGRESS"):
            return body, seen
        time.sleep(interval)
    raise AssertionError(f"job {task_id} did not finish in {timeout} s; seen {seen[-5:]}")


def run_together(setup: str, action: str, args: list[str], processes: int = 8, delay: float = 3.0) -> list[str]:
    """Run `action` in `processes` Python processes at the same moment, each after its own
    `setup` (imports); `args` are their sys.argv[1:]. Returns each one's stdout; every process
    must exit 0."""
    start_at = time.time() + delay  # every process sets up first, then all act at this moment
    script = f"import sys, time\n{setup}\ntime.sleep(max(0.0, {start_at} - time.time()))\n{action}\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, [err for _, err in outputs]
    return [out for out, _ in outputs]


def index_little_angle(frames: np.ndarray) -> np.ndarray:
    """Degrees between the index and little fingers' base-to-tip directions (how far the fingers
    are fanned), per frame."""
    from ghostouch.engine.augment import mirrored_points

    pts, _ = mirrored_points(frames)
    index, little = pts[:, 8] - pts[:, 5], pts[:, 20] - pts[:, 17]
    cos = np.sum(index * little, axis=1) / np.linalg.norm(index, axis=1) / np.linalg.norm(little, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
