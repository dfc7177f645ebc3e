"""Error responses: always JSON `{"detail": "<what is wrong and how to fix it>"}`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from ghostouch.storage import ObjectNotFound, StorageError
from ghostouch.text import first_line

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    detail: str


_MEANING = {
    401: "an operator's listing without the operator's bearer token (GHOSTOUCH_OPERATOR_TOKEN)",
    403: "the download link is invalid or has expired (poll /status again for a fresh one), or an operator's "
    "listing on an API without GHOSTOUCH_OPERATOR_TOKEN",
    404: "no such model, gesture, task or file for this caller",
    409: "the edit conflicts with the model (a name it already has, or too few gestures left)",
    413: "the body is larger than 2 MiB",
    415: "a compressed body (Content-Encoding): send the JSON uncompressed",
    422: "the body, a frame or a name is invalid; the detail says which and why",
    503: "the training queue is full or unavailable, or the model storage or the registry database is; retry "
    "later (after Retry-After seconds when given)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each `{"detail": "..."}`."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in codes}


def bad_request(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def not_found(message: str) -> HTTPException:
    return HTTPException(status_code=404, detail=message)


def describe_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's validation errors as one line: `where: what; where: what`."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {str(error.get('msg', 'invalid')).lower()}")
    return "; ".join(parts)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation errors in the same one-string format as every other error."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)


async def storage_error(request: Request, exc: Exception) -> JSONResponse:
    """Storage that fails under a request: 503 (retry later), or 404 for a file that is gone,
    never a bare 500; the details go to the log, not to the client."""
    assert isinstance(exc, StorageError)
    if isinstance(exc, ObjectNotFound):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "a stored file of this model is missing"}, status_code=404)
    log.warning("%s %s: storage failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "the model storage is unavailable; please retry"}, status_code=503)


# What a registry database that is down, restarting or out of connections raises.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, SQLAlchemyTimeoutError)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """The registry database unreachable under a request: 503 (retry later), as for the queue and
    the storage; one line in the log, not a traceback per request."""
    log.warning("%s %s: registry database unavailable: %s", request.method, request.url.path, first_line(exc))
    return JSONResponse({"detail": "the model registry is unavailable; please retry"}, status_code=503)


def plain_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema with every 422 described as it is sent, `{"detail": "..."}` (FastAPI
    documents its own list-of-errors body, which `validation_error` replaces)."""
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response is not None:
                response["content"] = {"application/json": {"schema": error_body}}
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema
