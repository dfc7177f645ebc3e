"""Process-level behaviour: the embedded `serve`, restarts, a Redis flush, idempotent retries."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import redis

from ghostouch.engine import hands
from tests.conftest import Service, free_port, get_ok, poll_like_android, service_env, wait_until


def post_recording(url: str, pose: str, seed: int, **extra: object) -> httpx.Response:
    frames = hands.generate_recording(pose, 80, np.random.default_rng(seed), handedness=1.0).tolist()
    body = {"model_code": "base_v1", "gesture": pose, "landmarks": frames, "allow_duplicate": True}
    return httpx.post(f"{url}/train", json=body, timeout=30, **extra)  # type: ignore[arg-type]


def test_embedded_serve_trains_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(tmp_path / "data", None, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ghostouch.cli", "serve", "--port", str(port)],
        env=env,
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        wait_until(lambda: get_ok(f"{url}/readyz"), 180, "embedded serve never became ready")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("redis-server" in " ".join(c.cmdline()) for c in children)
        r = post_recording(url, "call", 1)
        body, _ = poll_like_android(url, r.json()["task_id"])
        assert body["status"] == "SUCCESS"
        assert httpx.get(body["result"]["tflite_url"]).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_status_survives_restarts_and_a_redis_flush(service: Service, redis_url: str) -> None:
    r = post_recording(service.url, "three", 2)
    task_id = r.json()["task_id"]
    before, _ = poll_like_android(service.url, task_id)
    assert before["status"] == "SUCCESS"
    redis.Redis.from_url(redis_url).flushdb()
    service.stop("api")
    service.stop("worker")
    service.start_worker()
    service.start_api()
    after = httpx.get(f"{service.url}/status/{task_id}").json()
    assert after["status"] == "SUCCESS"
    assert after["result"]["model_code"] == before["result"]["model_code"]
    assert httpx.get(after["result"]["tflite_url"]).status_code == 200
    service.wait_ready()


def test_idempotency_key_returns_the_original_task(service: Service) -> None:
    headers = {"Idempotency-Key": "retry-abc-1"}
    first = post_recording(service.url, "pinch", 3, headers=headers)
    second = post_recording(service.url, "pinch", 3, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]
    body, _ = poll_like_android(service.url, first.json()["task_id"])
    assert body["status"] == "SUCCESS"
    jobs = httpx.get(f"{service.url}/models/base_v1/jobs").json()
    assert sum(1 for j in jobs if j["task_id"] == first.json()["task_id"]) == 1


@pytest.mark.parametrize("gesture", ["rock"])
def test_resending_an_existing_gesture_refines_it(service: Service, gesture: str) -> None:
    frames = hands.generate_recording(gesture, 60, np.random.default_rng(4), handedness=0.0).tolist()
    r = httpx.post(f"{service.url}/train", json={"model_code": "base_v1", "gesture": gesture, "landmarks": frames})
    body, _ = poll_like_android(service.url, r.json()["task_id"])
    assert body["status"] == "SUCCESS", body
    assert body["result"]["label_map"] == {"paper": 0, "rock": 1, "scissors": 2}
    assert body["result"]["refined"] is True
    gestures = httpx.get(f"{service.url}/models/{body['result']['model_code']}/gestures").json()
    base = httpx.get(f"{service.url}/models/base_v1/gestures").json()
    assert gestures[1]["frames"] == base[1]["frames"] + 60


def test_a_job_whose_message_was_flushed_still_runs(service: Service, redis_url: str) -> None:
    service.stop("worker")
    r = post_recording(service.url, "four", 6)
    task_id = r.json()["task_id"]
    redis.Redis.from_url(redis_url).flushdb()  # the queued message is gone
    assert httpx.get(f"{service.url}/status/{task_id}").json()["status"] == "PENDING"
    time.sleep(1.5)
    service.start_worker()
    body, _ = poll_like_android(service.url, task_id, timeout=180)
    assert body["status"] == "SUCCESS"
