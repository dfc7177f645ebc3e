"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from ghostouch.api.state import ApiState, get_state
from ghostouch.jobs.celery_app import warm_nodes
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
        replies = state.celery.control.ping(timeout=1.0) or []
        nodes = sorted(node for reply in replies for node in reply)
        warm = warm_nodes(state.celery, nodes)
        checks["workers"] = len(nodes) if nodes else "no worker answered"
        checks["warm_workers"] = len(warm) if warm else ("warming up" if nodes else 0)
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
        checks["workers"] = checks["warm_workers"] = "unknown"
    try:
        state.store.check_writable()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"not writable: {exc}"
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
    """Ready when the database and broker answer, storage is writable and a worker is warm (has
    imported TensorFlow and traced training: a job then starts at once)."""
    checks = await run_in_threadpool(_checks, state)
    ready = (
        all(checks[k] == "ok" for k in ("database", "broker", "storage"))
        and isinstance(checks["warm_workers"], int)
        and checks["warm_workers"] > 0
    )
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
