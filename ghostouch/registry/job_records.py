"""Job records: creation (with idempotency keys), status, and who runs them.

A job is claimed by one worker process at a time (`claim_job`), which keeps it alive with
`heartbeat`; `release_abandoned_jobs` puts back in the queue those whose worker is gone
(`ghostouch/jobs/recovery.py` decides when). Claims, releases and a worker's writes are
compare-and-set updates, so racing workers and sweepers never run or finish a job twice.

Every time a job record is stamped with (created, claimed, heartbeat, sent again) or compared to
(stale, waiting too long) is the registry database's (`schema.db_now`), evaluated in the SQL
statement itself: machines whose clocks disagree still agree on how old a heartbeat is. An age
reaches a limit when it equals it (`<=`): SQLite's clock counts milliseconds, so a time written
just before reads as 0 s old, and 0 s must still count as old enough.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ghostouch.registry.db import session_scope
from ghostouch.registry.schema import Job, db_now, iso_utc

# Whether the worker process named by a job's `claimed_by` is known to be gone.
Abandoned = Callable[[str], bool]


def job_dict(j: Job) -> dict[str, Any]:
    return {
        "task_id": j.task_id,
        "owner": j.owner,
        "kind": j.kind,
        "parent_code": j.parent_code,
        "gesture": j.gesture,
        "sample_ref": j.sample_ref,
        "options": dict(j.options or {}),
        "status": j.status,
        "current_step": j.current_step,
        "result": j.result,
        "error_info": j.error_info,
        "error_detail": j.error_detail,
        "child_code": j.child_code,
        "attempts": j.attempts,
        "created_at": iso_utc(j.created_at),
        "updated_at": iso_utc(j.updated_at) if j.updated_at else None,
    }


def create_job(db_url: str, **fields: Any) -> tuple[dict[str, Any], bool]:
    """Insert a PENDING job; with an idempotency key already used by this owner, return that job.

    Returns (job, created).
    """
    key = fields.get("idempotency_key")
    try:
        with session_scope(db_url) as s:
            job = Job(task_id=secrets.token_hex(16), status="PENDING", current_step="queued", **fields)
            s.add(job)
            s.flush()
            return job_dict(job), True
    except IntegrityError:
        if key is None:
            raise
    existing = find_job_by_key(db_url, fields["owner"], key)
    if existing is None:  # pragma: no cover - the conflicting row was deleted meanwhile
        raise RuntimeError("idempotency key conflict could not be resolved")
    return existing, False


def find_job_by_key(db_url: str, owner: str, key: str) -> dict[str, Any] | None:
    with session_scope(db_url) as s:
        job = s.scalars(select(Job).where(Job.owner == owner, Job.idempotency_key == key)).first()
        return job_dict(job) if job else None


def forget_key(db_url: str, task_id: str) -> None:
    """Free a finished job's idempotency key for a new job (the job itself stays as it was)."""
    with session_scope(db_url) as s:
        _set_where(s, task_id, Job.status == "FAILURE", idempotency_key=None)


def count_waiting(db_url: str) -> int:
    """How many jobs wait for a worker (PENDING)."""
    with session_scope(db_url) as s:
        return int(s.scalar(select(func.count()).select_from(Job).where(Job.status == "PENDING")) or 0)


_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def get_job(db_url: str, task_id: str) -> dict[str, Any] | None:
    """The job, or None (also for ids no job can have: PostgreSQL refuses a NUL in a query)."""
    if not _TASK_ID.fullmatch(task_id):
        return None
    with session_scope(db_url) as s:
        job = s.get(Job, task_id)
        return job_dict(job) if job else None


class JobTakenOver(LookupError):
    """The job is no longer this worker's: it was released or claimed by another one."""


def update_job(s: Session, task_id: str, claimant: str | None = None, **fields: Any) -> None:
    """Set fields of a job; with `claimant`, only while that worker process still holds it."""
    job = s.get(Job, task_id, with_for_update=claimant is not None)
    if job is None:
        raise LookupError(f"job {task_id} not found")
    if claimant is not None and (job.claimed_by != claimant or job.status != "PROGRESS"):
        raise JobTakenOver(f"job {task_id} is now {job.status}, held by {job.claimed_by or 'no worker'}")
    for name, value in fields.items():
        setattr(job, name, value)


def set_job(db_url: str, task_id: str, claimant: str | None = None, **fields: Any) -> None:
    with session_scope(db_url) as s:
        update_job(s, task_id, claimant, **fields)


def claim_job(
    db_url: str,
    task_id: str,
    claimant: str,
    stale_after_s: float,
    abandoned: Abandoned,
    max_attempts: int,
    *,
    time_limit_s: float | None = None,
) -> bool:
    """Atomically take a job for the worker process `claimant`: PENDING, or PROGRESS abandoned
    (no heartbeat for `stale_after_s`, or its claimant is a process `abandoned` says is gone). An
    abandoned job that has already stopped `max_attempts` workers, or whose attempt ran (kept its
    heartbeat) for `time_limit_s` or longer (its worker was killed at the limit), ends as FAILURE instead.

    Redelivered or re-queued messages for a job that is finished or running elsewhere lose the
    race here, so no job is ever trained twice at the same time.
    """
    with session_scope(db_url) as s:
        job = s.get(Job, task_id)
        if job is None or job.status not in ("PENDING", "PROGRESS"):
            return False
        if job.status == "PENDING":
            claimable = Job.status == "PENDING"
        else:
            claimable = _abandoned_as_seen(job, stale_after_s, abandoned)
            if _out_of_time(s, job, claimable, time_limit_s):
                return False
            if job.attempts >= max_attempts:
                _give_up(s, job, claimable)
                return False
        return _set_where(
            s,
            task_id,
            claimable,
            status="PROGRESS",
            current_step="starting",
            claimed_by=claimant,
            attempts=Job.attempts + 1,
            updated_at=db_now(),
            started_at=db_now(),  # (the same time: one statement, one reading of the clock)
        )


def heartbeat(db_url: str, task_id: str, claimant: str) -> bool:
    """Mark a running job as alive; False when it is no longer this claimant's."""
    with session_scope(db_url) as s:
        mine = and_(Job.status == "PROGRESS", Job.claimed_by == claimant)
        return _set_where(s, task_id, mine, updated_at=db_now())


def release_abandoned_jobs(
    db_url: str,
    stale_after_s: float,
    abandoned: Abandoned,
    max_attempts: int,
    *,
    time_limit_s: float | None = None,
) -> list[str]:
    """Jobs left in PROGRESS by a worker that died go back to PENDING (their task ids are
    returned, to be queued again); one that has already stopped `max_attempts` workers ends as
    FAILURE instead, so a job that kills its worker cannot do so forever, and so does one whose
    attempt ran for `time_limit_s` or longer (killed at its time limit: a call that hung and could
    not be interrupted would hang again). Each change is a compare-and-set on what was
    read, so sweepers racing each other or a new claim change nothing."""
    released = []
    with session_scope(db_url) as s:
        running = s.scalars(select(Job).where(Job.status == "PROGRESS")).all()
    for job in running:
        with session_scope(db_url) as s:
            as_seen = _abandoned_as_seen(job, stale_after_s, abandoned)
            if _out_of_time(s, job, as_seen, time_limit_s):
                continue
            if job.attempts >= max_attempts:
                _give_up(s, job, as_seen)
            elif _set_where(
                s,
                job.task_id,
                as_seen,
                status="PENDING",
                current_step="queued again (its worker stopped)",
                claimed_by=None,
            ):
                released.append(job.task_id)
    return released


def _abandoned_as_seen(seen: Job, stale_after_s: float, abandoned: Abandoned) -> Any:
    """SQL condition: the job is still in PROGRESS exactly as `seen` (same claimant, same attempt),
    and abandoned: its claimant is gone, or its heartbeat is older than `stale_after_s` (by the
    database's clock)."""
    same_claimant = Job.claimed_by.is_(None) if seen.claimed_by is None else Job.claimed_by == seen.claimed_by
    as_seen = and_(Job.status == "PROGRESS", Job.attempts == seen.attempts, same_claimant)
    if seen.claimed_by and abandoned(seen.claimed_by):
        return as_seen
    return and_(as_seen, Job.updated_at <= db_now(stale_after_s))


def give_back(db_url: str, task_id: str, claimant: str, max_attempts: int) -> bool:
    """A running job back to PENDING by the worker running it, after a passing fault (its registry
    connection cut mid-query), while it has run fewer than `max_attempts` times; True when it went."""
    with session_scope(db_url) as s:
        mine = and_(Job.status == "PROGRESS", Job.claimed_by == claimant, Job.attempts < max_attempts)
        return _set_where(
            s,
            task_id,
            mine,
            status="PENDING",
            current_step="queued again (a database connection failed)",
            claimed_by=None,
        )


def time_limit_message(limit_s: float, step: str) -> str:
    """What a job that ran out of time tells the user (`error_info`; retrying may run it again)."""
    return f"the job did not finish within its time limit ({limit_s:.0f} s, at: {step}); please retry"


def _out_of_time(s: Session, job: Job, condition: Any, time_limit_s: float | None) -> bool:
    """End the job FAILURE (retryable) when `condition` holds and its attempt ran for
    `time_limit_s` or longer, heartbeats showing it alive until then (one whose worker died early
    but was found late ran for seconds); True when it did."""
    if time_limit_s is None or job.started_at is None or job.updated_at is None:
        return False
    if (job.updated_at - job.started_at).total_seconds() < time_limit_s:
        return False
    late = and_(condition, Job.updated_at == job.updated_at)  # as read: no heartbeat since
    message = time_limit_message(time_limit_s, job.current_step)
    detail = {"retryable": True}
    return _set_where(
        s, job.task_id, late, status="FAILURE", current_step="failed", error_info=message, error_detail=detail
    )


def _give_up(s: Session, job: Job, condition: Any) -> None:
    message = f"the job stopped its worker {job.attempts} times; it was not retried again"
    _set_where(s, job.task_id, condition, status="FAILURE", current_step="failed", error_info=message)


def queue_again(db_url: str, task_id: str) -> bool:
    """A FAILURE job back to PENDING, for a retry of its request; True for the one caller whose
    compare-and-set took it (concurrent retries queue it once)."""
    with session_scope(db_url) as s:
        return _set_where(
            s,
            task_id,
            Job.status == "FAILURE",
            status="PENDING",
            current_step="queued",
            error_info=None,
            error_detail=None,
            attempts=0,
            claimed_by=None,
        )


def _set_where(s: Session, task_id: str, condition: Any, **values: Any) -> bool:
    """UPDATE one job WHERE `condition`: True when it matched (a compare-and-set in SQL)."""
    result = s.execute(
        update(Job)
        .where(Job.task_id == task_id, condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def pending_jobs_to_resend(db_url: str, unsent_for_s: float) -> list[str]:
    """Jobs PENDING for `unsent_for_s` since they were created or last sent (a message a dead
    worker had taken but not started stays with the broker until its visibility timeout); each
    is marked sent now, a compare-and-set, so of several sweepers only one sends it."""
    waiting = and_(Job.status == "PENDING", Job.updated_at <= db_now(unsent_for_s))
    with session_scope(db_url) as s:
        candidates = list(s.scalars(select(Job.task_id).where(waiting)))
    resend = []
    for task_id in candidates:
        with session_scope(db_url) as s:
            if _set_where(s, task_id, waiting, updated_at=db_now()):
                resend.append(task_id)
    return resend


def pending_jobs_older_than(db_url: str, seconds: float) -> list[str]:
    """Task ids of jobs still PENDING after `seconds` (their queue message may have been lost)."""
    with session_scope(db_url) as s:
        old = Job.created_at <= db_now(seconds)
        return list(s.scalars(select(Job.task_id).where(Job.status == "PENDING", old)))


def sample_refs_of_jobs(db_url: str, finished_within_s: float) -> set[str]:
    """The sample sets of jobs not finished, or finished (last changed) within the last
    `finished_within_s` seconds: a retryable failure runs again on its stored frames when its
    request is sent again."""
    recent = (Job.status.in_(("PENDING", "PROGRESS"))) | (Job.updated_at >= db_now(finished_within_s))
    with session_scope(db_url) as s:
        return {ref for ref in s.scalars(select(Job.sample_ref).where(recent, Job.sample_ref.is_not(None))) if ref}


def jobs_of_model(db_url: str, code: str) -> list[dict[str, Any]]:
    with session_scope(db_url) as s:
        rows = s.scalars(select(Job).where(Job.parent_code == code).order_by(Job.created_at, Job.task_id))
        return [job_dict(j) for j in rows]
