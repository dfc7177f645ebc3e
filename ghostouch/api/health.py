"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ghostouch.api.state import ApiState, get_state
from ghostouch.registry.db import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok"}


def _checks(state: ApiState) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        with get_engine(state.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
        replies = state.celery.control.ping(timeout=1.0)
        checks["workers"] = len(replies) if replies else "no worker answered"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
        checks["workers"] = "unknown"
    try:
        state.store.check_writable()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"not writable: {exc}"
    return checks


@router.get("/readyz", responses={503: {"description": "not ready: `checks` says what is missing"}})
async def readyz(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    """Ready when the database and broker answer, a worker is alive and storage is writable."""
    checks = await run_in_threadpool(_checks, state)
    ready = all(checks[k] == "ok" for k in ("database", "broker", "storage")) and isinstance(checks["workers"], int)
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
