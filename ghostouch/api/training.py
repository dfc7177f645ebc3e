"""The legacy app endpoints: `POST /train` and `GET /status/{task_id}` (see CLIENT_CONTRACT.md)."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal, TypeVar

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.requests import ClientDisconnect

from ghostouch import names
from ghostouch.api.errors import bad_request, describe_errors, error_responses, not_found
from ghostouch.api.queueing import queue_job
from ghostouch.api.state import ApiState, current_owner, get_state
from ghostouch.config import BASE_CODE, MAX_FRAMES, MAX_GESTURE_CHARS, MIN_FRAMES
from ghostouch.engine.frames import FrameError, check_frames
from ghostouch.publishing import artifact_urls
from ghostouch.registry import job_records, repo
from ghostouch.text import quoted

log = logging.getLogger(__name__)
router = APIRouter(tags=["training (app contract)"])


# The request bounds in the OpenAPI schema only: the server checks them itself, with messages
# that name the frame and value at fault.
FRAMES_SCHEMA: dict[str, Any] = {
    "minItems": MIN_FRAMES,
    "maxItems": MAX_FRAMES,
    "items": {"type": "array", "minItems": 64, "maxItems": 64, "items": {"type": "number"}},
}


class RequestBody(BaseModel):
    """A JSON body the API parses: a field it does not know is refused, not ignored (a client
    sending `allowDuplicate` would otherwise never learn that its option was not read)."""

    model_config = ConfigDict(extra="forbid")


class TrainRequest(RequestBody):
    model_code: str = Field(description="Code of the model the app runs now (a fresh install: base_v1)")
    gesture: str = Field(
        description="The user's name for the gesture, 1-64 characters, any script",
        json_schema_extra={"minLength": 1, "maxLength": MAX_GESTURE_CHARS},
    )
    landmarks: list[Any] = Field(
        description=f"{MIN_FRAMES}-{MAX_FRAMES} frames of 64 numbers: 21 world landmarks (x, y, z in "
        "metres) then handedness (0.0 left, 1.0 right)",
        json_schema_extra=FRAMES_SCHEMA,
    )
    allow_duplicate: StrictBool = Field(
        default=False, description="Train even if the gesture duplicates an existing one (JSON true or false)"
    )


JobStatus = Literal["PENDING", "PROGRESS", "SUCCESS", "FAILURE", "DUPLICATE"]


class TrainAccepted(BaseModel):
    task_id: str
    status: JobStatus
    status_url: str


class Progress(BaseModel):
    current_step: str


class StatusResponse(BaseModel):
    task_id: str
    status: JobStatus
    progress: Progress
    result: dict[str, Any] | None = None
    error_info: str | None = None
    error_detail: dict[str, Any] | None = None


def clean_gesture_name(raw: str, field: str = "gesture") -> str:
    """The name as stored (`names.stored_form`); 422, naming the body's `field`, for anything that
    would make an unusable or look-alike name (the rules: `names.clean_gesture_name`)."""
    try:
        return names.clean_gesture_name(raw)
    except names.InvalidName as exc:
        raise bad_request(f"{field}: {exc}") from None


async def read_json_body(request: Request) -> Any:
    """The request body as JSON (its size is capped by the `BodySizeLimit` middleware)."""
    # Decoding 2 MB of numbers takes tens of milliseconds: not on the event loop, which would
    # hold every other request (a probe, a poll) behind it.
    return await run_in_threadpool(_decoded, await _received(request))


# Content-Encoding values that mean a compressed body. Anything else is read as it comes: some HTTP
# clients send a charset there ("UTF-8"), and bodies that reached the API that way were read.
COMPRESSIONS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "compress", "x-compress"})


async def _received(request: Request) -> bytes:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in COMPRESSIONS:
        raise HTTPException(415, f"Content-Encoding {quoted(encoding)} is not supported; send the JSON uncompressed")
    try:
        return await request.body()
    except ClientDisconnect:  # the client hung up mid-body: nobody to answer, nothing to log
        raise HTTPException(400, "the request body was cut off") from None


FramesBody = TypeVar("FramesBody", bound=BaseModel)
# Bodies with frames decoded at once. A 2 MiB body can take 14 times its size as Python objects
# until its frames are an array (40 at once: 116 -> 867 MB, bench/body_memory.py): the others wait
# for a slot here, holding neither a thread nor more than their bytes.
_DECODING = anyio.Semaphore(4)


async def frames_request(
    request: Request, model: type[FramesBody], preamble: str = ""
) -> tuple[FramesBody, np.ndarray]:
    """The body as `model` (its `landmarks` emptied) and its frames as `check_frames` accepts them;
    422 saying what is wrong."""
    raw = await _received(request)  # (a slow sender holds no slot)
    async with _DECODING:
        return await run_in_threadpool(_with_frames, model, raw, preamble)


def _with_frames(model: type[FramesBody], raw: bytes, preamble: str) -> tuple[FramesBody, np.ndarray]:
    parsed = parse_body(model, _decoded(raw), preamble)
    frames = checked_frames(parsed.landmarks)  # type: ignore[attr-defined]
    return parsed.model_copy(update={"landmarks": []}), frames


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:  # (json.loads reads UTF-8, -16 and -32)
        raise bad_request(
            f"body is not UTF-8 text (byte 0x{body[exc.start]:02x} at position {exc.start}); send JSON encoded as UTF-8"
        ) from None
    except ValueError as exc:
        if "int_max_str_digits" in str(exc):  # Python's limit on integer literals (4300 digits)
            raise bad_request("body is not usable JSON: it holds a number with thousands of digits") from None
        raise bad_request(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("body is not usable JSON: it is nested too deeply") from None


Body = TypeVar("Body", bound=BaseModel)


def checked_frames(landmarks: Any) -> np.ndarray:
    """The request's frames as `check_frames` accepts them, or 422 saying what is wrong."""
    try:
        return check_frames(landmarks, MIN_FRAMES, MAX_FRAMES)
    except FrameError as exc:
        raise bad_request(str(exc)) from None


def parse_body(model: type[Body], body: Any, preamble: str = "") -> Body:
    """`body` as `model`, or 422 saying which fields are wrong (after `preamble`)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "model_type" for error in errors):
            raise bad_request(f"{preamble}the body must be a JSON object, not {_json_kind(body)}") from None
        unknown = [str(error["loc"][0]) for error in errors if error["type"] == "extra_forbidden"]
        known = [error for error in errors if error["type"] != "extra_forbidden"]
        parts = [describe_errors(known)] if known else []
        if unknown:
            parts.append(
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(quoted(u) for u in unknown)} "
                f"(the fields are {', '.join(model.model_fields)})"
            )
        raise bad_request(preamble + "; ".join(parts)) from None


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), "that")


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its JSON body itself (`read_json_body`, `parse_body`)."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}}


@router.post(
    "/train",
    status_code=202,
    response_model=TrainAccepted,
    openapi_extra=json_body_schema(TrainRequest),
    responses=error_responses(404, 413, 415, 422, 503),
)
async def train(
    request: Request,
    state: Annotated[ApiState, Depends(get_state)],
    owner: Annotated[str, Depends(current_owner)],
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    """Queue the training of a child model: the parent's gestures plus this one."""
    req, frames = await frames_request(request, TrainRequest, "body must be {model_code, gesture, landmarks}: ")
    gesture = clean_gesture_name(req.gesture)
    parent = await run_in_threadpool(repo.get_model, state.db_url, req.model_code)
    if parent is None and req.model_code == BASE_CODE:  # a new deployment whose workers have not started
        raise HTTPException(503, "base_v1 is not provisioned yet: the first worker to start trains it; please retry")
    if parent is None or not parent.usable_by(owner):
        raise not_found(f"model_code {quoted(req.model_code)} does not name a model; a fresh install uses 'base_v1'")
    job = await run_in_threadpool(
        queue_job,
        state,
        owner,
        parent.code,
        gesture,
        frames,
        {"allow_duplicate": req.allow_duplicate},
        idempotency_key,
    )
    return accepted(state, job["task_id"], job["status"])


def accepted(state: ApiState, task_id: str, status: str) -> JSONResponse:
    """202 naming the job; `status_url` on the public address, as the download links are (the
    request's Host and X-Forwarded-* headers are the client's to set)."""
    status_url = f"{state.settings.resolved_public_url}/status/{task_id}"
    return JSONResponse({"task_id": task_id, "status": status, "status_url": status_url}, status_code=202)


@router.get(
    "/status/{task_id}",
    name="status",
    response_model=StatusResponse,
    responses=error_responses(404, 503),
)
def status(
    task_id: str,
    state: Annotated[ApiState, Depends(get_state)],
    owner: Annotated[str, Depends(current_owner)],
) -> StatusResponse:
    """The job's state; on SUCCESS `result` holds a fresh `tflite_url` and the new `model_code`."""
    job = job_records.get_job(state.db_url, task_id)
    if job is None or job["owner"] != owner:
        raise not_found(f"no training job with task_id {quoted(task_id)}")
    result = None
    if job["status"] == "SUCCESS" and job["child_code"]:
        result = success_result(state, job)
    return StatusResponse(
        task_id=task_id,
        status=job["status"],
        progress=Progress(current_step=job["current_step"]),
        result=result,
        error_info=job["error_info"],
        error_detail=job["error_detail"],
    )


def success_result(state: ApiState, job: dict[str, Any]) -> dict[str, Any]:
    model = repo.get_model(state.db_url, job["child_code"])
    if model is None:  # pragma: no cover - published atomically with the job's SUCCESS
        raise HTTPException(500, "the trained model is missing from the registry")
    urls = artifact_urls(state.store, model.artifacts)
    metrics = model.metrics
    return {
        "tflite_url": urls["tflite_url"],
        "model_code": model.code,
        "label_map": model.label_map(),
        "labels_url": urls["labels_url"],
        "tflite_float_url": urls["tflite_float_url"],
        "report_url": urls["report_url"],
        "refined": bool(job["result"] and job["result"].get("refined")),
        "step_seconds": (job["result"] or {}).get("step_seconds"),
        "metrics": {
            "uint8_agreement": metrics.get("uint8_agreement"),
            "holdout_per_class_accuracy": metrics.get("holdout_per_class_accuracy"),
            "holdout_confusion": metrics.get("holdout_confusion"),
        },
    }
