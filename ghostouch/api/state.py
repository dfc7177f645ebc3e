"""What the API process holds: settings, registry URL, object store and the Celery client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from celery import Celery
from fastapi import Request

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
