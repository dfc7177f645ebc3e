"""Liveness and readiness probes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from ghostouch.api.state import ApiState, get_state
from ghostouch.config import BASE_CODE
from ghostouch.jobs.celery_app import warm_nodes
from ghostouch.registry import repo
from ghostouch.registry.db import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok"}


# A probe must answer within seconds, whatever hangs behind it: each check runs in a daemon
# thread of its own (one stuck on a frozen database must not keep the process from exiting), and
# one still running from an earlier probe of the same app is awaited rather than started again,
# so a storage that stopped answering neither stalls `/readyz` nor piles up threads.
PROBE_SECONDS = 3.0
_running: dict[tuple[int, str], Future[dict[str, Any]]] = {}
_lock = threading.Lock()


def _database(state: ApiState) -> dict[str, Any]:
    try:
        with get_engine(state.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"database": "ok"}
    except Exception as exc:
        return {"database": f"unreachable: {type(exc).__name__}"}


def _broker(state: ApiState) -> dict[str, Any]:
    try:
        with state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        replies = state.celery.control.ping(timeout=1.0) or []
        nodes = sorted(node for reply in replies for node in reply)
        warm = warm_nodes(state.celery, nodes)
        return {
            "broker": "ok",
            "workers": len(nodes) if nodes else "no worker answered",
            "warm_workers": len(warm) if warm else ("warming up" if nodes else 0),
        }
    except Exception as exc:
        return {"broker": f"unreachable: {type(exc).__name__}", "workers": "unknown", "warm_workers": "unknown"}


def _storage(state: ApiState) -> dict[str, Any]:
    try:
        state.store.check_writable()
        return {"storage": "ok"}
    except Exception as exc:
        return {"storage": f"not writable: {exc}"}


def _base_model(state: ApiState) -> dict[str, Any]:
    """base_v1, which every fresh install trains from, is registered and its model file stored
    (a bucket emptied, or another bucket configured, leaves the registry naming files that are
    gone: every job from a fresh install would fail)."""
    try:
        base = repo.get_model(state.db_url, BASE_CODE)
        if base is None:
            return {"base_v1": "not provisioned yet (the first worker to start trains it)"}
        key = base.artifacts["tflite"]["key"]
        return {
            "base_v1": "ok" if state.store.exists(key) else f"registered, but its model file {key} is not in storage"
        }
    except Exception as exc:
        return {"base_v1": f"unknown: {type(exc).__name__}"}


# Each check, and the entries of `checks` it fills.
CHECKS: dict[str, tuple[Callable[[ApiState], dict[str, Any]], tuple[str, ...]]] = {
    "database": (_database, ("database",)),
    "broker": (_broker, ("broker", "workers", "warm_workers")),
    "storage": (_storage, ("storage",)),
    "base_v1": (_base_model, ("base_v1",)),
}


def _started(state: ApiState, name: str) -> Future[dict[str, Any]]:
    check = CHECKS[name][0]
    with _lock:
        running = _running.get((id(state), name))
        if running is None or running.done():
            running = _running[(id(state), name)] = Future()
            threading.Thread(target=_run, args=(running, check, state), name=f"readyz-{name}", daemon=True).start()
    return running


def _run(future: Future[dict[str, Any]], check: Callable[[ApiState], dict[str, Any]], state: ApiState) -> None:
    future.set_result(check(state))  # every check turns its own failures into an entry


def forget_checks(state: ApiState) -> None:
    """Drop an app's check records when it shuts down."""
    with _lock:
        for key in [key for key in _running if key[0] == id(state)]:
            del _running[key]


def _checks(state: ApiState) -> dict[str, Any]:
    futures = {name: _started(state, name) for name in CHECKS}
    wait(futures.values(), timeout=PROBE_SECONDS)
    checks: dict[str, Any] = {}
    for name, future in futures.items():
        if future.done():
            checks.update(future.result())
        else:
            checks.update({key: f"no answer within {PROBE_SECONDS:.0f} s" for key in CHECKS[name][1]})
    return checks


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Any]


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: `checks` says what is missing"}},
)
async def readyz(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    """Ready when the database and broker answer, storage is writable, base_v1 is registered and
    stored, and a worker is warm (has imported TensorFlow and traced training: a job then starts
    at once)."""
    checks = await run_in_threadpool(_checks, state)
    ready = (
        all(checks[k] == "ok" for k in ("database", "broker", "storage", "base_v1"))
        and isinstance(checks["warm_workers"], int)
        and checks["warm_workers"] > 0
    )
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
