"""Several machines' worth of processes on one host: API + workers sharing Redis, PostgreSQL and a
Firebase Storage emulator, each with its own scratch data directory."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from ghostouch.engine import hands
from tests.conftest import OPERATOR, Service, free_port, poll_like_android, service_env, spare_redis_url, wait_until
from tests.gcs_fixtures import Emulator, ServiceAccount
from tests.test_registry import _postgres_url


@pytest.fixture
def cluster(
    tmp_path: Path, redis_url: str, gcs_emulator: Emulator, service_account: ServiceAccount
) -> Iterator[tuple[Service, dict[str, str]]]:
    pg = _postgres_url()
    db_url = next(pg)
    port = free_port()
    shared = {
        "GHOSTOUCH_DATABASE_URL": db_url,
        "GHOSTOUCH_STORAGE": "firebase",
        "FIREBASE_CREDENTIALS": str(service_account.path),
        "FIREBASE_STORAGE_BUCKET": gcs_emulator.bucket,
        "GHOSTOUCH_FIREBASE_PROJECT_ID": gcs_emulator.project,
        "STORAGE_EMULATOR_HOST": gcs_emulator.url,
    }
    # A Redis database of its own: the session-wide `service` workers must not take these jobs.
    broker = spare_redis_url(redis_url)
    redis.Redis.from_url(broker).flushdb()
    api_env = {**service_env(tmp_path / "api-scratch", broker, port), **shared}
    svc = Service(tmp_path / "api-scratch", api_env, port, logs=tmp_path)
    svc.data_dir.mkdir()
    try:
        yield svc, shared
    finally:
        svc.stop_all()
        next(pg, None)


def start_worker(svc: Service, shared: dict[str, str], name: str, scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**svc.env, **shared, "GHOSTOUCH_DATA_DIR": str(scratch)}
    saved = svc.env
    svc.env = env
    try:
        svc.start_worker(name)
    finally:
        svc.env = saved


def submit(svc: Service, parent: str, pose: str, seed: int) -> dict:
    frames = hands.generate_recording(pose, 80, np.random.default_rng(seed), handedness=1.0).tolist()
    r = httpx.post(
        f"{svc.url}/train",
        json={"model_code": parent, "gesture": pose, "landmarks": frames, "allow_duplicate": True},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    body, _ = poll_like_android(svc.url, r.json()["task_id"], timeout=240)
    assert body["status"] == "SUCCESS", body
    return body


def test_worker_b_extends_a_model_trained_by_worker_a(cluster: tuple[Service, dict[str, str]], tmp_path: Path) -> None:
    svc, shared = cluster
    start_worker(svc, shared, "worker_a", tmp_path / "scratch-a")
    svc.start_api()
    svc.wait_ready(180)
    first = submit(svc, "base_v1", "call", 1)
    svc.stop("worker_a")
    start_worker(svc, shared, "worker_b", tmp_path / "scratch-b")
    svc.wait_ready(180)
    second = submit(svc, first["result"]["model_code"], "three", 2)
    assert second["result"]["label_map"] == {"paper": 0, "rock": 1, "scissors": 2, "call": 3, "three": 4}
    # neither worker kept models or samples on its own disk
    for scratch in ("scratch-a", "scratch-b"):
        assert not (tmp_path / scratch / "objects").exists()


def test_parallel_trainings_on_one_parent_make_two_children(
    cluster: tuple[Service, dict[str, str]], tmp_path: Path
) -> None:
    svc, shared = cluster
    start_worker(svc, shared, "worker_a", tmp_path / "scratch-a")
    start_worker(svc, shared, "worker_b", tmp_path / "scratch-b")
    svc.start_api()
    svc.wait_ready(180)
    # Both workers started on a new database and provisioned base_v1 at the same time: both live.
    wait_until(lambda: httpx.get(f"{svc.url}/readyz").json()["checks"]["workers"] == 2, 60, "a worker died")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda args: submit(svc, "base_v1", *args), [("call", 3), ("ok", 4)]))
    codes = {r["result"]["model_code"] for r in results}
    assert len(codes) == 2
    maps = [r["result"]["label_map"] for r in results]
    assert {m.get("call") for m in maps} == {3, None} and {m.get("ok") for m in maps} == {3, None}
    listing = httpx.get(f"{svc.url}/models", headers=OPERATOR).json()["models"]
    assert codes <= {m["model_code"] for m in listing}
