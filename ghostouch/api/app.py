"""The FastAPI application. TensorFlow is never imported in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from ghostouch.api import files, gestures, health, models, training
from ghostouch.api.errors import (
    DATABASE_UNAVAILABLE,
    database_error,
    plain_validation_errors,
    storage_error,
    validation_error,
)
from ghostouch.api.health import forget_checks
from ghostouch.api.limits import BodySizeLimit, HeadAsGet
from ghostouch.api.state import ApiState
from ghostouch.config import MAX_BODY_BYTES, Settings, get_settings
from ghostouch.jobs.celery_app import make_celery
from ghostouch.registry.db import migrate
from ghostouch.storage import StorageError, build_store


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db_url = settings.resolved_database_url
        migrate(db_url)
        store = build_store(settings.storage_settings(answering_phones=True, links=True))
        state = app.state.ghostouch = ApiState(settings, db_url, store, make_celery(settings, answering_phones=True))
        try:
            yield
        finally:
            forget_checks(state)
            store.close()

    app = FastAPI(
        title="Ghostouch",
        version="0.2.0",
        description="Personalized hand-gesture models for the Ghostouch apps. The legacy endpoints "
        "`POST /train` and `GET /status/{task_id}` follow the mobile client contract exactly.",
        lifespan=lifespan,
    )
    for module in (training, models, gestures, files, health):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StorageError, storage_error)
    for database_failure in DATABASE_UNAVAILABLE:
        app.add_exception_handler(database_failure, database_error)
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(HeadAsGet)
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = plain_validation_errors(fastapi_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
