"""Time from POST /train to SUCCESS against a warm `ghostouch serve`.

    .venv/bin/python bench/time_to_model.py [--jobs 20]

Starts `ghostouch serve` on a fresh data directory and a free port, waits until it is ready and
warm, then runs the jobs one after another (synthetic 100-frame recordings, new gesture each
time, from base_v1), polling /status every 20 ms. Baseline in the same run: the engine alone
(train + export + verify) on the same data in this process, so the ratio shows what the service
adds (queueing, registry, storage, duplicate check, polling).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from ghostouch.engine import hands

POSES = ("call", "three", "ok", "pinch", "rock_on", "four", "thumbs_up", "point_left")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit("service did not become ready")


def run_job(url: str, frames: list[list[float]], gesture: str) -> float:
    start = time.perf_counter()
    body = {"model_code": "base_v1", "gesture": gesture, "landmarks": frames, "allow_duplicate": True}
    task_id = httpx.post(f"{url}/train", json=body, timeout=30).json()["task_id"]
    while True:
        status = httpx.get(f"{url}/status/{task_id}", timeout=30).json()
        if status["status"] not in ("PENDING", "PROGRESS"):
            break
        time.sleep(0.02)
    if status["status"] != "SUCCESS":
        raise SystemExit(f"job failed: {status}")
    return time.perf_counter() - start


def engine_baseline(recordings: list[np.ndarray], base: dict[str, np.ndarray]) -> list[float]:
    from ghostouch.engine.trainer import GestureFrames, train_gesture_model

    times = []
    for i, rec in enumerate(recordings):
        gestures = [GestureFrames(k, v) for k, v in base.items()] + [GestureFrames(f"g{i}", rec)]
        t = time.perf_counter()
        train_gesture_model(gestures)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    recordings = [hands.generate_recording(POSES[i % len(POSES)], 100, rng, handedness=1.0) for i in range(args.jobs)]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "GHOSTOUCH_DATA_DIR": data_dir, "GHOSTOUCH_LOG_LEVEL": "WARNING"}
        log = Path(data_dir) / "serve.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "ghostouch.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(url)
            run_job(url, recordings[0].tolist(), "warmup")  # first job after start-up
            service = [run_job(url, rec.tolist(), f"gesture {i}") for i, rec in enumerate(recordings)]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    from ghostouch.bases import synthetic_base_data

    engine = engine_baseline(recordings[:5], synthetic_base_data())
    p50, p95 = statistics.median(service), percentile(service, 95)
    e50 = statistics.median(engine)
    print(f"jobs: {len(service)} sequential, POST -> SUCCESS")
    print(f"service p50 {p50:.3f} s  p95 {p95:.3f} s  min {min(service):.3f} s  max {max(service):.3f} s")
    print(f"engine alone (train+export+verify, in-process) p50 {e50:.3f} s")
    print(f"ratio service/engine p50: {p50 / e50:.2f}x   aim p50 <= 1 s: {'met' if p50 <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
