"""Error responses: always JSON `{"detail": "<what is wrong and how to fix it>"}`."""

from __future__ import annotations

from fastapi import HTTPException


def bad_request(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def not_found(message: str) -> HTTPException:
    return HTTPException(status_code=404, detail=message)
