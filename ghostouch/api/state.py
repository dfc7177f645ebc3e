"""What the API process holds: settings, registry URL, object store and the Celery client."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import cast

from celery import Celery
from fastapi import HTTPException, Request

from ghostouch.config import ANONYMOUS_OWNER, Settings
from ghostouch.storage import ObjectStore


@dataclass
class ApiState:
    settings: Settings
    db_url: str
    store: ObjectStore
    celery: Celery


def get_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.ghostouch)


def current_owner(request: Request) -> str:
    """The caller's identity. One anonymous owner until authentication exists."""
    return ANONYMOUS_OWNER


def require_operator(request: Request) -> None:
    """Listings that span users are the operator's: the apps send no identity, so to anyone else
    they would show every user's models, gesture names and jobs (a model code is its owner's key:
    whoever holds one can read and train from that model, and no one can list them)."""
    token = get_state(request).settings.operator_token
    if not token:
        raise HTTPException(
            403,
            "this listing spans every user's models, so it is for the service's operator only: set "
            "GHOSTOUCH_OPERATOR_TOKEN on the API and send it as 'Authorization: Bearer <token>'",
        )
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
        raise HTTPException(
            401,
            "this listing is for the service's operator: send 'Authorization: Bearer <GHOSTOUCH_OPERATOR_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
