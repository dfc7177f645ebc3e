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
from tests.conftest import (
    OPERATOR,
    Service,
    free_port,
    get_ok,
    poll_like_android,
    service_env,
    spare_redis_url,
    start_serve,
    wait_until,
)


def post_recording(url: str, pose: str, seed: int, gesture: str | None = None, **extra: object) -> httpx.Response:
    frames = hands.generate_recording(pose, 80, np.random.default_rng(seed), handedness=1.0).tolist()
    body = {"model_code": "base_v1", "gesture": gesture or pose, "landmarks": frames, "allow_duplicate": True}
    return httpx.post(f"{url}/train", json=body, timeout=30, **extra)  # type: ignore[arg-type]


def test_embedded_serve_trains_and_stops_cleanly_on_ctrl_c(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = service_env(tmp_path / "data", None, port)
    proc = start_serve(env, port, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"

        wait_until(lambda: get_ok(f"{url}/readyz"), 180, "embedded serve never became ready")
        # A second serve on the same data directory is refused, also with a broker of its own.
        second = {**env, "GHOSTOUCH_PORT": str(free_port()), "GHOSTOUCH_BROKER_URL": spare_redis_url(redis_url)}
        command = [sys.executable, "-m", "ghostouch.cli", "serve"]
        refused = subprocess.run(command, env=second, capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 1 and f"another ghostouch serve (pid {proc.pid}) runs on" in refused.stderr
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
    jobs = httpx.get(f"{service.url}/models/base_v1/jobs", headers=OPERATOR).json()
    assert sum(1 for j in jobs if j["task_id"] == first.json()["task_id"]) == 1


def test_the_same_request_sent_again_without_a_key_is_one_job(service: Service) -> None:
    """The shipped apps send no Idempotency-Key: a POST resent because its answer was lost
    trained a second model. The same model, gesture, options and frames now answer the first
    job, while it waits and after it ended; other frames, or another name, make a new one."""
    first = post_recording(service.url, "pinch", 11)
    again = post_recording(service.url, "pinch", 11)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    body, _ = poll_like_android(service.url, first.json()["task_id"])
    assert body["status"] == "SUCCESS"
    later = post_recording(service.url, "pinch", 11)
    assert later.json() == {**first.json(), "status": "SUCCESS"}
    other_frames = post_recording(service.url, "pinch", 12)
    other_name = post_recording(service.url, "pinch", 11, gesture="pinch too")
    tasks = {r.json()["task_id"] for r in (first, other_frames, other_name)}
    assert len(tasks) == 3
    jobs = httpx.get(f"{service.url}/models/base_v1/jobs", headers=OPERATOR).json()
    assert sum(1 for j in jobs if j["task_id"] in tasks) == 3
    for task in tasks:
        poll_like_android(service.url, task)


def test_an_idempotency_key_answers_only_the_same_request(service: Service) -> None:
    headers = {"Idempotency-Key": "retry-abc-2"}
    first = post_recording(service.url, "pinch", 5, headers=headers)
    assert first.status_code == 202
    other_pose = post_recording(service.url, "call", 5, headers=headers)
    assert other_pose.status_code == 422, other_pose.text
    detail = other_pose.json()["detail"]
    assert "already used for another request" in detail and "landmarks" in detail
    assert first.json()["task_id"] not in detail  # the key may be another client's: its task stays theirs
    frames = hands.generate_recording("pinch", 80, np.random.default_rng(5), handedness=1.0).tolist()
    other_route = httpx.post(
        f"{service.url}/models/base_v1/gestures/rock/frames", json={"landmarks": frames}, headers=headers
    )
    assert other_route.status_code == 422 and "gesture" in other_route.json()["detail"]
    invalid = httpx.post(
        f"{service.url}/train", json={"model_code": "nope", "gesture": "", "landmarks": []}, headers=headers
    )
    assert invalid.status_code == 422 and "already used" not in invalid.json()["detail"]
    poll_like_android(service.url, first.json()["task_id"])


def test_a_retry_after_the_queue_was_down_queues_the_same_job(service: Service, tmp_path: Path) -> None:
    """An API whose broker is unreachable answers 503; the same request with the same key,
    once the queue is back, queues that job instead of answering its FAILURE."""
    env = {**service.env, "GHOSTOUCH_BROKER_URL": "redis://127.0.0.1:1/0"}
    down = Service(service.data_dir, env, free_port(), logs=tmp_path)
    down.start_api()
    try:
        headers = {"Idempotency-Key": "queue-down-1"}
        refused = post_recording(down.url, "three", 8, headers=headers)
        assert refused.status_code == 503 and "retry" in refused.json()["detail"]
    finally:
        down.stop_all()
    # `storage sweep` deleted its frames meanwhile (a week later, say): the retry stores them again.
    from ghostouch.config import Settings
    from ghostouch.registry import job_records, repo

    db_url = Settings(data_dir=service.data_dir).resolved_database_url
    failed = job_records.find_job_by_key(db_url, "anonymous", "queue-down-1")
    assert failed is not None and failed["status"] == "FAILURE"
    repo.forget_sample_set(db_url, failed["sample_ref"])
    (service.data_dir / "objects" / "samples" / f"{failed['sample_ref']}.npy").unlink()
    retried = post_recording(service.url, "three", 8, headers=headers)
    assert retried.status_code == 202, retried.text
    body, _ = poll_like_android(service.url, retried.json()["task_id"])
    assert body["status"] == "SUCCESS", body


@pytest.mark.parametrize("sent", ["rock", " rock "])
def test_a_name_the_model_already_has_ends_duplicate_and_changes_nothing(service: Service, sent: str) -> None:
    """The apps append the name they sent at index max + 1, so a name the parent already has
    must not come back as SUCCESS: that model would have no output at the index the app
    expects. Not even `allow_duplicate` (a second output cannot share a name)."""
    frames = hands.generate_recording("ok", 60, np.random.default_rng(4), handedness=0.0).tolist()
    body = {"model_code": "base_v1", "gesture": sent, "landmarks": frames, "allow_duplicate": True}
    r = httpx.post(f"{service.url}/train", json=body)
    status, _ = poll_like_android(service.url, r.json()["task_id"])
    assert status["status"] == "DUPLICATE", status
    assert "already has a gesture named 'rock'" in status["error_info"]
    assert "/models/base_v1/gestures/" in status["error_info"]
    assert status["error_detail"]["duplicate"]["existing_gesture"] == "rock"
    assert status["error_detail"]["duplicate"]["looks_alike"] is False  # the very name, once trimmed
    assert status["result"] is None
    jobs = httpx.get(f"{service.url}/models/base_v1/jobs", headers=OPERATOR).json()
    assert next(j for j in jobs if j["task_id"] == r.json()["task_id"])["child_code"] is None


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


def test_connections_that_send_nothing_are_closed(service: Service) -> None:
    """A socket opened and never used holds one of the API's file descriptors: it is closed after
    the keep-alive timeout, as one between requests is, while a client that speaks is served."""
    import socket

    idle = [socket.create_connection(("127.0.0.1", service.port), timeout=30) for _ in range(20)]
    seen: list[tuple[str, object]] = []
    started = time.monotonic()
    try:
        for sock in idle:
            assert sock.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 15
        assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
        # ... while an app polling every 5 s (Android) finds its connection still open.
        with httpx.Client(timeout=5, limits=httpx.Limits(keepalive_expiry=60)) as client:
            assert client.get(f"{service.url}/healthz").status_code == 200
            time.sleep(6)
            before = client.get(
                f"{service.url}/healthz", extensions={"trace": lambda name, info: seen.append((name, info))}
            )
        assert before.status_code == 200 and not any(name.startswith("connection.connect_tcp") for name, _ in seen)
    finally:
        for sock in idle:
            sock.close()


def test_headers_without_end_are_refused_and_ordinary_ones_served(service: Service) -> None:
    """Uvicorn holds a request's headers in memory until they end: past 64 KiB the connection gets
    431 and is closed, while 40 KiB of headers (and a 2 MiB body after small ones) still pass."""
    import socket

    def head(pad_lines: int) -> bytes:
        pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(pad_lines))
        return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + pad

    def response(sock: socket.socket) -> bytes:
        """One whole response (status line, headers, and the body its content-length names)."""
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head(40) + b"\r\n")
        assert response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(head(150) + b"\r\n")  # whole, in one send, on a kept-alive connection
        answer = response(sock)
        assert answer.startswith(b"HTTP/1.1 431") and b"over 64 KiB" in answer, answer[:200]
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head(100) + b"\r\n")  # whole, on a fresh connection
        assert response(sock).startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        try:
            for _ in range(1000):  # up to 100 MB, never ended
                sock.sendall(head(100))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server while sending
        answer = response(sock)
        assert answer.startswith(b"HTTP/1.1 431") and b"over 64 KiB" in answer, answer[:200]
    big = hands.generate_recording("call", 1000, np.random.default_rng(3), handedness=1.0).tolist()
    r = httpx.post(f"{service.url}/train", json={"model_code": "nope", "gesture": "g", "landmarks": big}, timeout=30)
    assert r.status_code == 404, r.text  # the body read whole, then the unknown model named


def test_serve_raises_its_open_file_limit_and_tells_its_own_shortage_from_the_brokers(tmp_path: Path) -> None:
    """A process started with the common limit of 256 or 1024 open files lifts it to the hard
    limit; and with no descriptor left, the supervisor's check of the embedded broker says it
    cannot tell, instead of taking a healthy broker for dead and restarting it."""
    script = """
import resource, sys
from pathlib import Path
from ghostouch.api.server import raise_open_file_limit
from ghostouch.embedded_broker import EmbeddedBroker
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
print(raise_open_file_limit() > 64 or hard <= 64)
broker = EmbeddedBroker(Path(sys.argv[1]) / "redis.sock")
broker.start()
try:
    print(broker.answers())
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    held = []
    try:
        while True:
            held.append(open("/dev/null"))
    except OSError:
        pass
    print(broker.answers())
    for f in held:
        f.close()
    print(broker.answers())
finally:
    broker.stop()
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "None", "True"], done.stdout
