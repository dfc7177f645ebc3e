"""Jobs whose worker died: who runs a job, heartbeats, and putting abandoned jobs back in the queue.

A worker process claims a job under its name ("host/pid-namespace:pid", `this_process`) and,
while the job runs, refreshes the job's `updated_at` every `HEARTBEAT_SECONDS`. A job in PROGRESS
is abandoned when its claimant is a process of this machine that no longer exists (a pool process
killed by the OOM killer or SIGKILL), or when no heartbeat came for `STALE_JOB_SECONDS` (its
machine died). Every worker's main process sweeps for such jobs when it starts and every
`SWEEP_SECONDS`, sets them back to PENDING and queues them again, and sends again the jobs
PENDING for `RESEND_PENDING_SECONDS` since they were last sent while the queue is empty; a job
that has stopped `MAX_ATTEMPTS` workers ends as FAILURE instead.

Claiming and releasing are compare-and-set updates (`job_records.claim_job`,
`job_records.release_abandoned_jobs`), and every write a worker makes to its job holds only while
the job is still its own (`job_records.JobTakenOver` stops it otherwise), so a job is never
trained twice at once nor finished by a worker that lost it. Every time these records hold or
are compared with (heartbeats, claims, when a job was queued or last sent) is the registry
database's, read in the SQL statements themselves (`schema.db_now`): a machine whose clock is
off neither takes over a job that is alive nor leaves a dead one, and its own times look no
older or newer to the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from kombu.exceptions import ChannelError

from ghostouch.config import Settings
from ghostouch.jobs.celery_app import QUEUE, enqueue_training
from ghostouch.machine import machine_id, process_running, same_machine
from ghostouch.registry import job_records

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STALE_JOB_SECONDS = 60.0  # six missed heartbeats
SWEEP_SECONDS = 30.0
MAX_ATTEMPTS = 3
# A job PENDING this long since it was queued (or last sent), while the queue is empty, is sent
# again: a worker killed after taking its message but before starting it leaves the message with
# the broker for an hour (the visibility timeout). While the queue holds messages (a backlog, whose
# jobs wait their turn) only after RESEND_BUSY_SECONDS, so a backlog is not flooded with copies.
RESEND_PENDING_SECONDS = 60.0
RESEND_BUSY_SECONDS = 600.0


def this_process() -> str:
    return f"{machine_id()}:{os.getpid()}"


def is_abandoned(claimant: str) -> bool:
    """True when `claimant` ("host/boot/namespace:pid") is a process of this machine that has exited."""
    machine, _, pid = claimant.rpartition(":")
    if not same_machine(machine) or not pid.isdigit():
        return False  # another machine's: only its missing heartbeats tell
    return not process_running(int(pid))


@contextmanager
def heartbeat(db_url: str, task_id: str, claimant: str) -> Iterator[None]:
    """Refresh the job's heartbeat from a background thread while the body runs."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                job_records.heartbeat(db_url, task_id, claimant)
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
    released = _release_abandoned(db_url, settings.job_time_limit_seconds)
    age = settings.requeue_after_seconds if pending_after_s is None else pending_after_s
    task_ids = sorted(set(released) | set(job_records.pending_jobs_older_than(db_url, age)))
    for task_id in task_ids:
        enqueue_training(celery, task_id)
    return task_ids


def _release_abandoned(db_url: str, time_limit_s: float) -> list[str]:
    released = job_records.release_abandoned_jobs(
        db_url, STALE_JOB_SECONDS, is_abandoned, MAX_ATTEMPTS, time_limit_s=time_limit_s
    )
    for task_id in released:
        log.warning("job %s lost its worker; queued again", task_id)
    return released


def queued_messages(celery: Celery) -> int | None:
    """Messages waiting in the training queue (None when the broker does not say). Redis keeps
    no empty lists, so an empty queue does not exist there: its passive declare answers
    NOT_FOUND, which means 0 waiting."""
    try:
        with celery.connection_for_write() as connection:
            return int(connection.default_channel.queue_declare(queue=QUEUE, passive=True).message_count)
    except ChannelError as exc:
        return 0 if "NOT_FOUND" in str(exc) else None
    except Exception:
        return None


def start_sweeper(celery: Celery, settings: Settings) -> threading.Thread:
    """A daemon thread that re-queues abandoned jobs every `SWEEP_SECONDS`."""

    def sweep() -> None:
        db_url = settings.resolved_database_url
        unsent: set[str] = set()  # released, but the broker was down: sent again next sweep
        while True:
            time.sleep(SWEEP_SECONDS)
            try:
                released = _release_abandoned(db_url, settings.job_time_limit_seconds)
                after = RESEND_PENDING_SECONDS if queued_messages(celery) == 0 else RESEND_BUSY_SECONDS
                waiting = job_records.pending_jobs_to_resend(db_url, after)
                for task_id in waiting:
                    log.info("job %s waited %.0f s for a worker; sent again", task_id, after)
                unsent.update(released, waiting)
                for task_id in sorted(unsent):
                    enqueue_training(celery, task_id)
                    unsent.discard(task_id)
            except Exception:  # pragma: no cover - the next sweep tries again
                log.exception("sweep for abandoned jobs failed")

    thread = threading.Thread(target=sweep, name="abandoned-job-sweeper", daemon=True)
    thread.start()
    return thread
