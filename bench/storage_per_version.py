"""Bytes stored per model version along a lineage of 50 versions, through the real service.

    .venv/bin/python bench/storage_per_version.py [--versions 50]

Starts `ghostouch serve` on a fresh data directory, then trains version after version, each
child of the previous one, adding one gesture (100 synthetic frames) each time; once the
per-gesture cap is reached the same few poses are refined instead (new frames for an existing
gesture). Reports object-store bytes (samples and model artifacts) and registry size per version.
Baseline in the same run: a registry that copies every version's training frames (what the
original server did by writing each model's data next to it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from ghostouch.engine import hands

sys.path.insert(0, str(Path(__file__).parent))
from time_to_model import free_port, wait_ready

POSES = ("call", "three", "ok", "pinch", "rock_on", "four", "one")


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {**os.environ, "GHOSTOUCH_DATA_DIR": tmp, "GHOSTOUCH_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ghostouch.cli", "serve", "--port", str(port)],
            env=env,
            stdout=(data / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(url)
            start_samples = tree_bytes(data / "objects" / "samples")
            start_models = tree_bytes(data / "objects" / "models")
            parent = "base_v1"
            copy_baseline = 0
            for i in range(args.versions):
                pose = POSES[i % len(POSES)]
                name = f"{pose}-{i}"
                frames = hands.generate_recording(pose, 100, rng, handedness=float(i % 2))
                body = {"model_code": parent, "gesture": name, "landmarks": frames.tolist(), "allow_duplicate": True}
                task = httpx.post(f"{url}/train", json=body, timeout=30).json()["task_id"]
                while (status := httpx.get(f"{url}/status/{task}").json())["status"] in ("PENDING", "PROGRESS"):
                    time.sleep(0.05)
                assert status["status"] == "SUCCESS", status
                parent = status["result"]["model_code"]
                info = httpx.get(f"{url}/models/{parent}").json()
                copy_baseline += sum(g["frames"] for g in info["labels"]) * 64 * 4
            with sqlite3.connect(data / "registry.sqlite3") as db_conn:  # fold the WAL into the file
                db_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            samples = tree_bytes(data / "objects" / "samples") - start_samples
            models = tree_bytes(data / "objects" / "models") - start_models
            db = (data / "registry.sqlite3").stat().st_size
            labels = len(httpx.get(f"{url}/models/{parent}/labels").json())
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    n = args.versions
    print(f"{n} versions in one lineage, final model has {labels} gestures")
    print(f"training samples stored: {samples / 1024:.1f} KiB total, {samples / n / 1024:.1f} KiB per version")
    print(f"model artifacts (uint8 + float tflite, labels, report): {models / n / 1024:.1f} KiB per version")
    print(f"registry (SQLite, all versions and jobs): {db / 1024:.1f} KiB, {db / n / 1024:.2f} KiB per version")
    print(f"baseline (copy frames into every version): {copy_baseline / n / 1024:.1f} KiB per version")
    print(f"ratio samples stored / baseline copies: {samples / copy_baseline:.3f}")


if __name__ == "__main__":
    main()
