"""Machines whose clocks disagree still agree on which jobs are alive: every time a job record
holds or is compared with is the registry database's, never the clock of the machine that writes
or reads it. A machine's clock is set off by shifting the clock the registry code reads
(`schema.datetime`) in this process; the database (SQLite, or a real PostgreSQL at
127.0.0.1:5432 in a throwaway database) keeps the true time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import pytest
from sqlalchemy import update

from ghostouch.jobs.recovery import MAX_ATTEMPTS, RESEND_PENDING_SECONDS, STALE_JOB_SECONDS, is_abandoned
from ghostouch.registry import job_records, schema
from ghostouch.registry.db import migrate, session_scope
from ghostouch.registry.schema import Job
from tests.conftest import ROOT
from tests.test_registry import _postgres_url

SKEW_S = 120.0  # what the review measured with libfaketime
REQUEUE_AFTER_S = 30.0  # Settings().requeue_after_seconds
# Worker processes of another machine: only their heartbeats tell whether they are alive.
WORKER_A, WORKER_B = "worker-a/0badcafe/4026531836:41", "worker-b/0badcafe/4026531836:42"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
# A worker's sweep, run in a process whose whole clock is shifted (libfaketime).
SWEEP = """
import json, sys
from ghostouch.jobs.recovery import MAX_ATTEMPTS, RESEND_PENDING_SECONDS, STALE_JOB_SECONDS, is_abandoned
from ghostouch.registry import job_records
url = sys.argv[1]
released = job_records.release_abandoned_jobs(url, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS)
resent = job_records.pending_jobs_to_resend(url, RESEND_PENDING_SECONDS)
print(json.dumps([released, resent, job_records.pending_jobs_older_than(url, float(sys.argv[2]))]))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        migrate(url)
        yield url
        return
    gen = _postgres_url()
    url = next(gen)
    migrate(url)
    yield url
    next(gen, None)


@contextmanager
def clock_off_by(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    """Within the block, this process is a machine whose clock runs `seconds` ahead (or behind)."""
    true = datetime

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:
            return true.now(tz) + timedelta(seconds=seconds)

    with monkeypatch.context() as patch:
        patch.setattr(schema, "datetime", Skewed)
        yield


def _new_job(db_url: str) -> str:
    job, _ = job_records.create_job(
        db_url, owner="anonymous", parent_code="base_v1", gesture="g", sample_ref=None, options={}
    )
    return str(job["task_id"])


def _running_job(db_url: str, claimant: str) -> str:
    task_id = _new_job(db_url)
    assert job_records.claim_job(db_url, task_id, claimant, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS)
    return task_id


def _last_heartbeat_ago(db_url: str, task_id: str, seconds: float) -> None:
    """The job's worker machine died `seconds` ago (by the true time, which the database keeps)."""
    with session_scope(db_url) as s:
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        s.execute(update(Job).where(Job.task_id == task_id).values(updated_at=then))


def _status(db_url: str, task_id: str) -> tuple[str, str | None]:
    """The job's status and the worker process holding it."""
    with session_scope(db_url) as s:
        job = s.get(Job, task_id)
        assert job is not None
        return job.status, job.claimed_by


def _sweep(db_url: str) -> tuple[list[str], list[str], list[str]]:
    """What a worker's sweep does: release abandoned jobs, find waiting ones to send again."""
    released = job_records.release_abandoned_jobs(db_url, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS)
    return (
        released,
        job_records.pending_jobs_to_resend(db_url, RESEND_PENDING_SECONDS),
        job_records.pending_jobs_older_than(db_url, REQUEUE_AFTER_S),
    )


def test_a_sweeper_whose_clock_runs_ahead_takes_over_only_jobs_whose_heartbeat_stopped(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alive, stopped = _running_job(db_url, WORKER_A), _running_job(db_url, WORKER_A)
    assert job_records.heartbeat(db_url, alive, WORKER_A)  # a current heartbeat
    _last_heartbeat_ago(db_url, stopped, 90)  # no heartbeat for 90 s: its machine is gone
    waiting = _new_job(db_url)  # just queued by the API
    with clock_off_by(monkeypatch, SKEW_S):
        assert _sweep(db_url) == ([stopped], [], [])
        # Its message redelivered to this machine, the running job stays with its worker.
        assert not job_records.claim_job(db_url, alive, WORKER_B, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS)
        assert job_records.claim_job(db_url, stopped, WORKER_B, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS)
    assert _status(db_url, alive) == ("PROGRESS", WORKER_A)
    assert job_records.heartbeat(db_url, alive, WORKER_A)  # its worker keeps it, and finishes it
    job_records.set_job(db_url, alive, WORKER_A, status="SUCCESS")
    assert _status(db_url, waiting) == ("PENDING", None)
    assert _sweep(db_url) == ([], [], [])  # what the fast machine wrote is not stale to the others


def test_times_written_by_a_machine_whose_clock_runs_behind_do_not_look_old(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped = _running_job(db_url, WORKER_A)
    _last_heartbeat_ago(db_url, stopped, 90)
    with clock_off_by(monkeypatch, -SKEW_S):  # its API queues a job, its worker claims another
        waiting = _new_job(db_url)
        running = _running_job(db_url, WORKER_B)
        assert job_records.heartbeat(db_url, running, WORKER_B)
        assert _sweep(db_url) == ([stopped], [], [])  # yet it sees a genuinely stale heartbeat
    assert _sweep(db_url) == ([], [], [])
    assert _status(db_url, running) == ("PROGRESS", WORKER_B)
    assert _status(db_url, waiting) == ("PENDING", None)


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed")
def test_a_worker_process_whose_clock_runs_ahead_leaves_running_jobs_alone() -> None:
    """As the review found it: a whole worker process 120 s ahead (libfaketime), sweeping a
    PostgreSQL registry (a SQLite one is one machine's: its clock is the process's own)."""
    gen = _postgres_url()
    db_url = next(gen)
    try:
        migrate(db_url)
        alive, stopped = _running_job(db_url, WORKER_A), _running_job(db_url, WORKER_A)
        _last_heartbeat_ago(db_url, stopped, 90)
        waiting = _new_job(db_url)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"+{SKEW_S:.0f}s"}
        clock = [sys.executable, "-c", "import time; print(time.time())"]
        ahead = float(subprocess.run(clock, env=env, capture_output=True, text=True, check=True).stdout)
        assert ahead - datetime.now(UTC).timestamp() > SKEW_S - 10  # the shift works
        sweep = [sys.executable, "-c", SWEEP, db_url, str(REQUEUE_AFTER_S)]
        done = subprocess.run(sweep, env=env, capture_output=True, text=True, timeout=120, check=True)
        assert json.loads(done.stdout) == [[stopped], [], []]
        assert _status(db_url, alive) == ("PROGRESS", WORKER_A) and job_records.heartbeat(db_url, alive, WORKER_A)
        assert _status(db_url, waiting) == ("PENDING", None)
    finally:
        next(gen, None)


def test_the_storage_sweep_measures_the_ages_of_files_by_the_stores_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stamps its files by its own clock (here this machine's file system); a sweeping
    machine whose clock runs ahead must not take a publishing job's files for old enough."""
    from types import SimpleNamespace

    from ghostouch.storage import LocalObjectStore, base
    from ghostouch.sweep import LeftoverSweep

    db_url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    migrate(db_url)
    store = LocalObjectStore(tmp_path / "objects", public_url="http://127.0.0.1:1", signing_secret=b"s" * 32)
    min_age = 720.0
    young, old = "models/mslow/00000001/mslow.tflite", "models/mdead/00000001/mdead.tflite"
    for key, age in ((young, min_age - 60), (old, min_age + 60)):
        store.put_bytes(key, b"model files no version refers to")
        then = datetime.now(UTC).timestamp() - age
        os.utime(store.local_path(key), (then, then))
    true_time = base.time.time
    monkeypatch.setattr(base, "time", SimpleNamespace(time=lambda: true_time() + SKEW_S, sleep=base.time.sleep))
    sweep = LeftoverSweep(min_age_s=min_age, force=True)  # (force: this registry refers to no file at all)
    assert sweep.run(db_url, store) == []  # first sighting
    assert sweep.run(db_url, store) == [old]
    assert store.exists(young) and not [key for key in store.list_keys("") if key.startswith(".ghostouch-probe")]
