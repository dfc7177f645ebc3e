"""Jobs whose worker died: who runs a job, heartbeats, and putting abandoned jobs back in the queue.

A worker process claims a job under its name ("host:pid", `this_process`) and, while the job
runs, refreshes the job's `updated_at` every `HEARTBEAT_SECONDS`. A job in PROGRESS is abandoned
when its claimant is a process of this machine that no longer exists (a pool process killed by
the OOM killer or SIGKILL), or when no heartbeat came for `STALE_JOB_SECONDS` (its machine died).
Every worker's main process sweeps for such jobs when it starts and every `SWEEP_SECONDS`, sets
them back to PENDING and queues them again; a job that has stopped `MAX_ATTEMPTS` workers ends as
FAILURE instead. Claiming is atomic (`repo.claim_job`), so a repeated message never runs a job twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

from ghostouch.config import Settings
from ghostouch.jobs.celery_app import enqueue_training
from ghostouch.registry import repo

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STALE_JOB_SECONDS = 60.0  # six missed heartbeats
SWEEP_SECONDS = 30.0
MAX_ATTEMPTS = 3


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_abandoned(claimant: str) -> bool:
    """True when `claimant` ("host:pid") is a process of this machine that has exited."""
    host, _, pid = claimant.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: only its missing heartbeats tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextmanager
def heartbeat(db_url: str, task_id: str, claimant: str) -> Iterator[None]:
    """Refresh the job's heartbeat from a background thread while the body runs."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                repo.heartbeat(db_url, task_id, claimant)
            except Exception:  # pragma: no cover - a missed beat only risks a harmless retry
                log.exception("heartbeat of job %s failed", task_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{task_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def requeue_lost_jobs(celery: Celery, settings: Settings, pending_after_s: float | None = None) -> list[str]:
    """Queue again the abandoned jobs, and the jobs PENDING for `pending_after_s` (default:
    `settings.requeue_after_seconds`; 0 right after an embedded broker started empty), whose
    queue messages a broker restart or flush may have lost."""
    db_url = settings.resolved_database_url
    released = repo.release_abandoned_jobs(db_url, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS)
    age = settings.requeue_after_seconds if pending_after_s is None else pending_after_s
    task_ids = sorted(set(released) | set(repo.pending_jobs_older_than(db_url, age)))
    for task_id in task_ids:
        enqueue_training(celery, task_id)
    return task_ids


def start_sweeper(celery: Celery, settings: Settings) -> threading.Thread:
    """A daemon thread that re-queues abandoned jobs every `SWEEP_SECONDS`."""

    def sweep() -> None:
        db_url = settings.resolved_database_url
        while True:
            time.sleep(SWEEP_SECONDS)
            try:
                for task_id in repo.release_abandoned_jobs(db_url, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS):
                    log.warning("job %s lost its worker; queued again", task_id)
                    enqueue_training(celery, task_id)
            except Exception:  # pragma: no cover - the next sweep tries again
                log.exception("sweep for abandoned jobs failed")

    thread = threading.Thread(target=sweep, name="abandoned-job-sweeper", daemon=True)
    thread.start()
    return thread
