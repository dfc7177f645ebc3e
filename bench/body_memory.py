"""Peak memory of the API process while many large bodies arrive at once.

Starts `ghostouch serve` on its embedded defaults (a fresh data directory, a free port), waits
until it is ready, then sends N bodies of about 2 MiB at once, twice: valid requests of 1,000 frames (202), then
bodies whose `landmarks` hold about 700,000 empty objects (the worst case for decoding: every two
bytes become a Python object; each is refused with 422). Reports the API process's peak resident
memory (VmHWM) before and after each burst, the ratio after / before, and how long the burst took
to be answered.

    .venv/bin/python -m bench.body_memory [--clients 40] [--code PATH]

`--code PATH` runs the service from another checkout (a worktree of an earlier commit, say) to
compare two versions in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench.time_to_model import free_port, wait_ready


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _bodies() -> dict[str, bytes]:
    from ghostouch.engine import hands

    empty = b'{"model_code": "base_v1", "gesture": "g", "landmarks": [' + b",".join([b"{}"] * 699_000) + b"]}"
    frames = hands.generate_recording("call", 1000, np.random.default_rng(1), handedness=1.0).tolist()
    valid = json.dumps({"model_code": "base_v1", "gesture": "call", "landmarks": frames, "allow_duplicate": True})
    return {"1000 valid frames": valid.encode(), "empty objects": empty}


def run(clients: int, code: Path | None) -> list[tuple[str, int, int, str, float]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTOUCH_")}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    rows = []
    with tempfile.TemporaryDirectory() as data:
        command = [sys.executable, "-m", "ghostouch.cli", "serve", "--port", str(port), "--data-dir", data]
        where = code or Path.cwd()  # (-m puts the working directory before PYTHONPATH)
        proc = subprocess.Popen(command, env=env, cwd=where, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, 180)
            for name, body in _bodies().items():
                before = _peak_kb(proc.pid)

                def send(body: bytes = body) -> int:
                    headers = {"content-type": "application/json"}
                    return httpx.post(f"{url}/train", content=body, headers=headers, timeout=120).status_code

                started = time.monotonic()
                with ThreadPoolExecutor(clients) as pool:
                    codes = sorted(set(pool.map(lambda _i: send(), range(clients))))
                took = time.monotonic() - started
                rows.append((name, before, _peak_kb(proc.pid), ",".join(map(str, codes)), took))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--code", type=Path, help="run the service from this checkout")
    args = parser.parse_args()
    print(f"| {args.clients} bodies at once | peak before | peak after | after / before | answers | all answered in |")
    print("|---|---|---|---|---|---|")
    for name, before, after, codes, took in run(args.clients, args.code):
        peaks = f"{before / 1024:.0f} MB | {after / 1024:.0f} MB | {after / before:.2f}x"
        print(f"| {name} | {peaks} | {codes} | {took:.1f} s |")


if __name__ == "__main__":
    main()
