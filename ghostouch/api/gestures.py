"""Gesture management: each edit makes a new model version; the parent is never changed.

- rename: immediate (same weights, new label map), 201 with the new version;
- delete: retrains without the gesture (a job, 202 + task_id); later gestures move down one index;
- add frames: refines an existing gesture (a job, 202 + task_id); indices unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Field

from ghostouch.api.errors import error_responses, not_found
from ghostouch.api.models import describe, visible_model
from ghostouch.api.queueing import queue_job
from ghostouch.api.state import ApiState, current_owner, get_state
from ghostouch.api.training import (
    FRAMES_SCHEMA,
    RequestBody,
    TrainAccepted,
    accepted,
    clean_gesture_name,
    frames_request,
    json_body_schema,
    parse_body,
    read_json_body,
)
from ghostouch.config import MAX_GESTURE_CHARS
from ghostouch.names import lookalike_in, stored_form
from ghostouch.publishing import publish_model, renamed_in_report
from ghostouch.registry import repo
from ghostouch.text import quoted

router = APIRouter(prefix="/models/{code}/gestures", tags=["gesture management"])


class RenameRequest(RequestBody):
    new_name: str = Field(
        description="The gesture's new name (1-64 characters)",
        json_schema_extra={"minLength": 1, "maxLength": MAX_GESTURE_CHARS},
    )


class FramesRequest(RequestBody):
    landmarks: list[Any] = Field(
        description="More frames of this gesture, same format as POST /train", json_schema_extra=FRAMES_SCHEMA
    )


def _gesture(model: repo.ModelInfo, name: str) -> repo.GestureInfo:
    """The gesture a URL names (percent-encoded, so "/" may be part of a name): exactly, else in
    the form names are stored in (`stored_form`), which bases imported before that form existed
    may not be in."""
    wanted = stored_form(name)
    for match in (lambda g: g.name == name, lambda g: stored_form(g.name) == wanted):
        for g in model.gestures:
            if match(g):
                return g
    raise not_found(f"model {model.code} has no gesture {quoted(wanted)}; it has {', '.join(model.labels)}")


def _rename(state: ApiState, model: repo.ModelInfo, owner: str, old: str, new: str) -> repo.ModelInfo:
    store = state.store
    gestures = [
        repo.GestureInfo(new if g.name == old else g.name, g.output_index, g.sample_refs, g.n_frames)
        for g in model.gestures
    ]
    code = repo.new_code()
    publish_model(
        state.db_url,
        store,
        code=code,
        parent_code=model.code,
        owner=owner,
        kind="edited",
        gestures=gestures,
        tflite_uint8=store.get_bytes(model.artifacts["tflite"]["key"]),
        tflite_float=store.get_bytes(model.artifacts["tflite_float"]["key"]),
        metrics=renamed_in_report(model.metrics, old, new),
        training_config=model.training_config,
        description=f"{model.code}: {old} -> {new}",
    )
    created = repo.get_model(state.db_url, code)
    assert created is not None
    return created


@router.post(
    "/{name:path}/rename",
    status_code=201,
    responses=error_responses(404, 409, 413, 415, 422, 503),
    openapi_extra=json_body_schema(RenameRequest),
)
async def rename_gesture(
    request: Request,
    code: str,
    name: str,
    state: Annotated[ApiState, Depends(get_state)],
    owner: Annotated[str, Depends(current_owner)],
) -> dict[str, Any]:
    """A new version whose gesture `name` is called `new_name`; the same model, same indices."""
    body = parse_body(RenameRequest, await read_json_body(request))
    model = await run_in_threadpool(visible_model, state, code, owner)
    name = _gesture(model, name).name
    new = clean_gesture_name(body.new_name, field="new_name")
    if new == name:
        raise HTTPException(409, f"gesture {quoted(name)} of model {code} already has that name")
    # The gesture itself may be renamed to a form that looks the same (its plain spelling, say).
    existing = lookalike_in(new, [label for label in model.labels if label != name])
    if existing is not None:
        looks = "" if existing == new else f", which looks the same as {quoted(new)}"
        raise HTTPException(409, f"model {code} already has a gesture named {quoted(existing)}{looks}")
    created = await run_in_threadpool(_rename, state, model, owner, name, new)
    return describe(state, created)


@router.post(
    "/{name:path}/frames",
    status_code=202,
    response_model=TrainAccepted,
    responses=error_responses(404, 413, 415, 422, 503),
    openapi_extra=json_body_schema(FramesRequest),
)
async def add_frames(
    request: Request,
    code: str,
    name: str,
    state: Annotated[ApiState, Depends(get_state)],
    owner: Annotated[str, Depends(current_owner)],
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    """Queue a new version where gesture `name` is retrained with these extra frames."""
    _, frames = await frames_request(request, FramesRequest)
    model = await run_in_threadpool(visible_model, state, code, owner)
    name = _gesture(model, name).name
    # (Frames the gesture already holds are left out by the job, `jobs.training._unstored_frames`.)
    job = await run_in_threadpool(
        queue_job, state, owner, model.code, name, frames, {"allow_duplicate": True, "refine": True}, idempotency_key
    )
    return accepted(state, job["task_id"], job["status"])


@router.delete("/{name:path}", status_code=202, response_model=TrainAccepted, responses=error_responses(404, 409, 503))
async def delete_gesture(
    code: str,
    name: str,
    state: Annotated[ApiState, Depends(get_state)],
    owner: Annotated[str, Depends(current_owner)],
) -> JSONResponse:
    """Queue a new version trained without `name` (the same deletion sent again answers the same
    job, `queue_job`). Gestures after it move down one index; the job's result carries the new label map.
    (The shipped apps never delete, so the legacy rule of stable indices holds for everything
    they can trigger.)"""
    model = await run_in_threadpool(visible_model, state, code, owner)
    name = _gesture(model, name).name
    if len(model.gestures) <= 2:
        raise HTTPException(409, "a model needs at least two gestures; this one would keep only one")
    job = await run_in_threadpool(queue_job, state, owner, model.code, name, None, {}, None, "delete")
    return accepted(state, job["task_id"], job["status"])
