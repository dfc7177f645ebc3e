"""Putting a job on the queue for a route: its frames stored, its record made, its message sent,
and a request sent again answered with the job it already made (`queue_job`)."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
from fastapi import HTTPException

from ghostouch.api.errors import bad_request
from ghostouch.api.state import ApiState
from ghostouch.jobs.celery_app import enqueue_training
from ghostouch.registry import job_records, repo
from ghostouch.text import quoted

log = logging.getLogger(__name__)


def queue_job(
    state: ApiState,
    owner: str,
    parent_code: str,
    gesture: str,
    frames: np.ndarray | None,
    options: dict[str, Any],
    idempotency_key: str | None = None,
    kind: str = "train",
) -> dict[str, Any]:
    """Store the frames, record a PENDING job and put it on the queue (503 if the queue is down).

    A request this owner already sent is answered with the original job: one with the same
    `idempotency_key` (the same request only, 422 otherwise), and without a key, one with the
    same endpoint, model, gesture, options and frames (`same_request_key`); either is queued again
    if it failed for a passing reason.
    """
    request: dict[str, Any] = {"kind": kind, "parent_code": parent_code, "gesture": gesture, "options": options}
    request["sample_ref"] = repo.sample_ref_of(frames) if frames is not None else None
    key = idempotency_key or same_request_key(request)
    previous = job_records.find_job_by_key(state.db_url, owner, key)
    if previous is not None and not idempotency_key and previous["status"] == "FAILURE" and not _passing(previous):
        # The server's own key must not answer every later try with a failure for good: the
        # request, sent again, makes a new job (a client's key is the client's to change).
        job_records.forget_key(state.db_url, previous["task_id"])
        previous = None
    if previous is not None:  # a retry: compare, without storing its frames
        return _replay(state, previous, request, key, frames)
    refuse_when_queue_full(state)
    if frames is not None:
        repo.store_sample_set(state.db_url, state.store, frames)  # (under `request["sample_ref"]`)
    job, created = job_records.create_job(state.db_url, owner=owner, idempotency_key=key, **request)
    if not created:  # the same request, sent concurrently
        return _replay(state, job, request, key, frames)
    _enqueue(state, job["task_id"])
    return job


def same_request_key(request: dict[str, Any]) -> str:
    """The idempotency key of a request sent without one: a digest of everything it asks for.
    The shipped apps send no key, and a retry of theirs (an HTTP client resending a POST whose
    answer was lost, a double tap) would train a second model; the same frames twice cannot come
    from two recordings. It starts with a line break, which no header can carry, so no client's
    key can take it."""
    fields = [request[name] for name in ("kind", "parent_code", "gesture", "sample_ref", "options")]
    return "\nsame request\n" + hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# What a client is told to wait before it sends again a request refused for a full queue, and
# for a queue that did not answer (a broker restarting: `serve` brings its own back in seconds).
QUEUE_FULL_RETRY_AFTER_SECONDS = 60
QUEUE_DOWN_RETRY_AFTER_SECONDS = 10


def refuse_when_queue_full(state: ApiState) -> None:
    """503 with Retry-After when `GHOSTOUCH_MAX_WAITING_JOBS` jobs already wait for a worker: a
    job queued behind them would start after its app has stopped polling, and each one holds
    its frames in storage meanwhile. (A soft cap: requests arriving together may pass it by up to the
    API's number of worker threads, 40 by default, since each counts before the others record.)"""
    cap = state.settings.max_waiting_jobs
    if cap and job_records.count_waiting(state.db_url) >= cap:
        raise HTTPException(
            503,
            f"the training queue is full ({cap} jobs are waiting for a worker); please retry in a minute",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)},
        )


def _enqueue(state: ApiState, task_id: str) -> None:
    try:
        enqueue_training(state.celery, task_id)
    except Exception as exc:
        log.warning("could not queue job %s: %s: %s", task_id, type(exc).__name__, exc)  # /readyz tells more
        job_records.set_job(
            state.db_url,
            task_id,
            status="FAILURE",
            current_step="failed",
            error_info="the training queue is unavailable; please retry later",
            error_detail={"queue_unavailable": True},
        )
        raise HTTPException(
            503,
            "the training queue is unavailable; please retry",
            headers={"Retry-After": str(QUEUE_DOWN_RETRY_AFTER_SECONDS)},
        ) from None


# A job's fields as a client sent them.
AS_SENT = {
    "kind": "endpoint",
    "parent_code": "model_code",
    "gesture": "gesture",
    "sample_ref": "landmarks",
    "options": "options (allow_duplicate, endpoint)",
}


def _replay(
    state: ApiState, job: dict[str, Any], request: dict[str, Any], key: str, frames: np.ndarray | None
) -> dict[str, Any]:
    """The job an idempotency key already names, for a retry of the same request."""
    differing = sorted(AS_SENT[name] for name, value in request.items() if job[name] != value)
    if differing:
        raise bad_request(
            f"Idempotency-Key {quoted(key)} was already used for another request (this one differs in "
            f"{', '.join(differing)}); send a new key, a random UUID, for each new request"
        )
    if job["status"] == "FAILURE" and _passing(job):
        # It failed for a passing reason (the queue, the store, a time limit): the retry runs it again.
        refuse_when_queue_full(state)
        if frames is not None:  # stored again if `storage sweep` has deleted them since (same reference)
            repo.store_sample_set(state.db_url, state.store, frames)
        if job_records.queue_again(state.db_url, job["task_id"]):
            _enqueue(state, job["task_id"])
        job = {**job, "status": "PENDING"}
    return job


def _passing(job: dict[str, Any]) -> bool:
    """Whether a failed job failed for a passing reason (the queue, the store, a time limit)."""
    detail = job["error_detail"] or {}
    return bool(detail.get("queue_unavailable") or detail.get("retryable"))
