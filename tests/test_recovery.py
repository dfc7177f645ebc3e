"""Lost work is found again: jobs whose queue message or worker died, and `serve`'s own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ghostouch.config import Settings
from ghostouch.embedded_broker import EmbeddedBroker
from ghostouch.machine import machine_id, process_running
from ghostouch.registry import job_records
from tests.conftest import free_port, get_ok, poll_like_android, service_env, spare_redis_url, start_serve, wait_until
from tests.test_processes import post_recording

# Run with the service's environment: a job recorded as PENDING whose queue message is gone,
# as after a restart of the embedded broker (which keeps nothing on disk).
ORPHAN_JOB = """
import numpy as np
from ghostouch.config import get_settings
from ghostouch.engine import hands
from ghostouch.registry import job_records, repo
from ghostouch.registry.db import migrate
from ghostouch.storage import build_store
settings = get_settings()
migrate(settings.resolved_database_url)
frames = hands.generate_recording("four", 80, np.random.default_rng(7), handedness=1.0)
ref = repo.store_sample_set(settings.resolved_database_url, build_store(settings.storage_settings()), frames)
job, _ = job_records.create_job(settings.resolved_database_url, owner="anonymous", parent_code="base_v1",
                                gesture="four", sample_ref=ref, options={"allow_duplicate": True})
print(job["task_id"])
"""


def _cmd(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # exited, or a zombie not reaped yet
        return ""


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _worker_processes(serve: psutil.Process) -> list[psutil.Process]:
    """The worker's main process and its pool processes."""
    mains = [c for c in serve.children() if " worker " in _cmd(c)]
    return [p for main in mains for p in (main, *main.children(recursive=True))]


def _kill_when_running(url: str, db_url: str, task_id: str, victims: object) -> None:
    """SIGKILL what `victims()` names as soon as the job is PROGRESS."""
    wait_until(lambda: httpx.get(f"{url}/status/{task_id}").json()["status"] == "PROGRESS", 60, "job never ran")
    for process in victims():  # type: ignore[operator]
        os.kill(process.pid, signal.SIGKILL)
    job = job_records.get_job(db_url, task_id)
    assert job is not None and job["status"] == "PROGRESS", "the job finished before its worker was killed"


def _broker_replaced_after(serve: psutil.Process, url: str, harm: object, pose: str) -> None:
    """`harm(broker)`, then serve runs a new broker process, is ready again and trains `pose`."""
    broker = next(c for c in serve.children() if "redis-server" in _cmd(c))
    harm(broker)  # type: ignore[operator]
    wait_until(
        lambda: any("redis-server" in _cmd(c) and c.pid != broker.pid for c in serve.children()),
        60,
        "the broker was not replaced",
    )
    wait_until(lambda: get_ok(f"{url}/readyz"), 120, "not ready again after the broker was replaced")
    task = post_recording(url, pose, 13).json()["task_id"]
    body, _ = poll_like_android(url, task, timeout=180)
    assert body["status"] == "SUCCESS", body


def test_serve_recovers_lost_messages_killed_workers_and_a_dead_broker(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    env = service_env(data, None, port)
    db_url = Settings(data_dir=data).resolved_database_url
    made = subprocess.run([sys.executable, "-c", ORPHAN_JOB], env=env, capture_output=True, text=True, check=True)
    orphan = made.stdout.split()[-1]
    proc = start_serve(env, port, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    serve = psutil.Process(proc.pid)
    try:
        wait_until(lambda: get_ok(f"{url}/readyz"), 180, "embedded serve never became ready")
        # 1. A PENDING job younger than the re-queue age, its message lost: queued at start.
        body, _ = poll_like_android(url, orphan, timeout=120)
        assert body["status"] == "SUCCESS", body

        # 2. The pool process running a job is killed: Celery redelivers, the job is claimed again.
        task = post_recording(url, "call", 11).json()["task_id"]
        pool = lambda: [p for p in _worker_processes(serve) if p.pid != _worker_processes(serve)[0].pid]  # noqa: E731
        _kill_when_running(url, db_url, task, pool)
        body, _ = poll_like_android(url, task, timeout=180)
        assert body["status"] == "SUCCESS", body
        job = job_records.get_job(db_url, task)
        assert job is not None and job["attempts"] == 2

        # 3. The whole worker dies mid-job: serve starts a new one, which finds the job abandoned.
        task = post_recording(url, "three", 12).json()["task_id"]
        _kill_when_running(url, db_url, task, lambda: _worker_processes(serve))
        body, _ = poll_like_android(url, task, timeout=240)
        assert body["status"] == "SUCCESS", body

        # 4. The embedded broker dies: serve starts it again and new jobs run.
        _broker_replaced_after(serve, url, lambda broker: broker.kill(), "pinch")

        # 5. Its socket file vanishes while it runs (as when a stray Redis cleaned up the same
        # path): it no longer answers, so serve replaces it.
        socket_path = Settings(data_dir=data).embedded_broker_socket
        _broker_replaced_after(serve, url, lambda _broker: socket_path.unlink(), "four")
        family = serve.children(recursive=True)
    finally:
        proc.send_signal(signal.SIGTERM)  # as systemd or docker stop: everything stops with it
        proc.wait(timeout=60)
    assert proc.returncode is not None
    assert not [c for c in family if _alive(c)]


def test_a_broker_left_by_a_killed_serve_is_shut_down_and_a_running_one_is_not_touched(tmp_path: Path) -> None:
    socket_path = tmp_path / "run" / "redis.sock"
    left = EmbeddedBroker(socket_path)
    left.start()
    assert left.process is not None
    alive_owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left.owner_file.write_text(f"{machine_id()} {alive_owner.pid} {left.process.pid}\n")
        refused = EmbeddedBroker(socket_path)
        with pytest.raises(RuntimeError, match=f"another ghostouch serve \\(pid {alive_owner.pid} on "):
            refused.start()
        refused.stop()  # as serve's cleanup does: the running broker and its files are not its own
        assert left.answers() and left.process.poll() is None and left.owner_file.exists()
    finally:
        alive_owner.kill()
        alive_owner.wait()
    ours = EmbeddedBroker(socket_path)
    try:
        ours.start()  # the owner is gone: the broker it left is shut down, ours takes the socket
        assert left.process.wait(timeout=10) == 0
        assert ours.answers() and ours.owner_file.read_text().split()[:2] == [machine_id(), str(os.getpid())]
    finally:
        ours.stop()
        left.stop()


def test_a_worker_of_serve_stops_when_serve_is_killed(tmp_path: Path, redis_url: str) -> None:
    env = service_env(tmp_path / "data", redis_url, free_port())
    worker = "exec python -m ghostouch.cli worker --no-ensure-base --parent-pid $$ --name orphan"
    parent = subprocess.Popen(
        ["sh", "-c", f"{worker} & wait"], env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    )
    wait_until(lambda: bool(psutil.Process(parent.pid).children()), 30, "the worker did not start")
    child = psutil.Process(parent.pid).children()[0]
    time.sleep(3)
    parent.kill()  # SIGKILL: no chance to stop its children
    parent.wait()
    wait_until(lambda: not _alive(child), 60, "the worker ran on")


def test_a_zombie_is_not_a_running_process() -> None:
    """A SIGKILLed `serve` stays a zombie until reaped; its broker must count as left behind."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert process_running(child.pid)
    child.kill()
    wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10, "no zombie")
    assert not process_running(child.pid)  # not reaped yet: still in the process table
    child.wait()
    assert not process_running(child.pid)


def test_the_sweep_reads_an_empty_queue_as_empty(redis_url: str) -> None:
    """Redis deletes an empty list, so the queue of an idle service does not exist there; the
    sweep must read that as 0 waiting (and re-send a lost job after 60 s), not as "unknown"
    (which it treats as a backlog: 600 s)."""
    import redis

    from ghostouch.jobs.celery_app import enqueue_training, make_celery
    from ghostouch.jobs.recovery import queued_messages

    url = spare_redis_url(redis_url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    app = make_celery(Settings(broker_url=url))
    try:
        assert queued_messages(app) == 0
        enqueue_training(app, "a-lost-job")
        enqueue_training(app, "another")
        assert queued_messages(app) == 2
        unreachable = make_celery(Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0"))
        assert queued_messages(unreachable) is None
    finally:
        client.flushdb()


def test_workers_report_warm_through_the_broker(redis_url: str) -> None:
    """/readyz counts a worker only once a pool process has said it is warm."""
    import redis

    from ghostouch.jobs.celery_app import make_celery, mark_warm, warm_nodes

    url = spare_redis_url(redis_url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    app = make_celery(Settings(broker_url=url))
    try:
        assert warm_nodes(app, ["w1-1@host", "w2-2@host"]) == set()
        mark_warm(app, "w2-2@host")
        assert warm_nodes(app, ["w1-1@host", "w2-2@host"]) == {"w2-2@host"}
        assert warm_nodes(app, []) == set()
    finally:
        client.flushdb()


def test_machine_ids_tell_hosts_apart_and_accept_the_older_form() -> None:
    from ghostouch.machine import same_machine

    host, boot, namespace = machine_id().split("/")
    assert len(boot) == 8 and boot != "-"  # this machine has a boot id to tell it from its namesakes
    assert same_machine(machine_id()) and same_machine(f"{host}/{namespace}")  # before the boot id
    assert not same_machine(f"{host}/00000000/{namespace}")  # same name, another machine
    assert not same_machine(f"other-host/{boot}/{namespace}")


def test_a_job_whose_registry_connection_is_cut_mid_query_runs_again(tmp_path: Path, redis_url: str) -> None:
    """A database failover cuts the connections of queries under way: the job goes back to the
    queue and runs again (the shipped apps never resend a request), instead of ending FAILURE."""
    import numpy as np
    import psycopg

    from ghostouch.engine import hands
    from tests.conftest import Service
    from tests.test_registry import _postgres_url

    pg = _postgres_url()
    db_url = next(pg)
    broker = spare_redis_url(redis_url)
    port = free_port()
    env = {**service_env(tmp_path / "data", broker, port), "GHOSTOUCH_DATABASE_URL": db_url}
    svc = Service(tmp_path / "data", env, port, logs=tmp_path)
    svc.data_dir.mkdir()
    try:
        svc.start_api()
        svc.start_worker()
        svc.wait_ready(180)
        frames = hands.generate_recording("call", 1000, np.random.default_rng(4), handedness=1.0).tolist()
        body = {"model_code": "base_v1", "gesture": "call", "landmarks": frames, "allow_duplicate": True}
        task_id = httpx.post(f"{svc.url}/train", json=body, timeout=30).json()["task_id"]
        wait_until(lambda: job_records.get_job(db_url, task_id)["status"] == "PROGRESS", 60, "never started")  # type: ignore[index]
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # the job's next step waits on it ...
            cut: list[str] = []
            until = time.monotonic() + 3  # the job touches the registry at every step, ~10 per second
            while time.monotonic() < until:
                waiting = conn.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchall()
                for pid, query in waiting:  # ... and its connection is cut mid-query
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    cut.append(query)
                time.sleep(0.05)
            conn.execute("COMMIT")
        assert cut
        done, _ = poll_like_android(svc.url, task_id)
        assert done["status"] == "SUCCESS", done
        job = job_records.get_job(db_url, task_id)
        assert job is not None and job["attempts"] == 2
    finally:
        svc.stop_all()
        next(pg, None)
