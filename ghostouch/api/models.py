"""Read access to the registry: model versions, their label maps, gestures and jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from ghostouch.api.errors import error_responses, not_found
from ghostouch.api.state import ApiState, current_owner, get_state, require_operator
from ghostouch.publishing import artifact_urls
from ghostouch.registry import job_records, repo
from ghostouch.text import quoted

router = APIRouter(prefix="/models", tags=["models"])


def visible_model(state: ApiState, code: str, owner: str) -> repo.ModelInfo:
    model = repo.get_model(state.db_url, code)
    if model is None or not model.usable_by(owner):
        raise not_found(f"no model with code {quoted(code)}")
    return model


def describe(state: ApiState, model: repo.ModelInfo) -> dict[str, Any]:
    return {
        "model_code": model.code,
        "parent_code": model.parent_code,
        "lineage": repo.lineage(state.db_url, model.code),
        "kind": model.kind,
        "description": model.description,
        "created_at": model.created_at,
        "labels": [{"name": g.name, "index": g.output_index, "frames": g.n_frames} for g in model.gestures],
        "label_map": model.label_map(),
        "metrics": model.metrics,
        "artifacts": {name: {"sha256": a["sha256"], "bytes": a["bytes"]} for name, a in model.artifacts.items()},
        **artifact_urls(state.store, model.artifacts),
    }


def _summary(m: repo.ModelInfo) -> dict[str, Any]:
    return {
        "model_code": m.code,
        "parent_code": m.parent_code,
        "kind": m.kind,
        "labels": m.labels,
        "created_at": m.created_at,
    }


@router.get("", responses=error_responses(401, 403, 503), dependencies=[Depends(require_operator)])
def list_models(
    state: Annotated[ApiState, Depends(get_state)], owner: Annotated[str, Depends(current_owner)]
) -> dict[str, Any]:
    """Every model version, oldest first, and the shared base models (the operator's: `Authorization:
    Bearer <GHOSTOUCH_OPERATOR_TOKEN>`)."""
    mine = repo.list_models(state.db_url, owner)
    bases = repo.list_models(state.db_url, repo.SYSTEM_OWNER)
    return {"models": [_summary(m) for m in mine], "bases": [_summary(m) for m in bases]}


@router.get("/{code}", responses=error_responses(404, 503))
def get_model(
    code: str, state: Annotated[ApiState, Depends(get_state)], owner: Annotated[str, Depends(current_owner)]
) -> dict[str, Any]:
    """Labels with output indices, parent and lineage, metrics and download URLs."""
    return describe(state, visible_model(state, code, owner))


@router.get("/{code}/labels", responses=error_responses(404, 503))
def get_labels(
    code: str, state: Annotated[ApiState, Depends(get_state)], owner: Annotated[str, Depends(current_owner)]
) -> dict[str, int]:
    """The label map in the apps' format: `{"paper": 0, "rock": 1, ...}`."""
    return visible_model(state, code, owner).label_map()


@router.get("/{code}/gestures", responses=error_responses(404, 503))
def get_gestures(
    code: str, state: Annotated[ApiState, Depends(get_state)], owner: Annotated[str, Depends(current_owner)]
) -> list[dict[str, Any]]:
    """The model's gestures with their output index and number of recorded frames (the model
    trains on the newest `GHOSTOUCH_MAX_FRAMES_PER_GESTURE` of them)."""
    model = visible_model(state, code, owner)
    return [{"name": g.name, "index": g.output_index, "frames": g.n_frames} for g in model.gestures]


@router.get("/{code}/jobs", responses=error_responses(401, 403, 404, 503), dependencies=[Depends(require_operator)])
def get_jobs(
    code: str, state: Annotated[ApiState, Depends(get_state)], owner: Annotated[str, Depends(current_owner)]
) -> list[dict[str, Any]]:
    """Jobs started from this model, oldest first; `action` says which request made each: `train`
    (POST /train, a new gesture), `add_frames` or `delete` (gesture management). The operator's:
    `Authorization: Bearer <GHOSTOUCH_OPERATOR_TOKEN>` (the jobs of base_v1 are every app's)."""
    model = visible_model(state, code, owner)
    keep = ("task_id", "gesture", "status", "current_step", "error_info", "child_code", "created_at")
    return [
        {"action": job_action(j, model.labels), **{k: j[k] for k in keep}}
        for j in job_records.jobs_of_model(state.db_url, code)
        if j["owner"] == owner
    ]


def job_action(job: dict[str, Any], parent_labels: list[str]) -> str:
    """Which request made a job of this parent. Jobs from before registry revision 0002 refined
    a gesture whenever they named one the parent has (no `refine` flag then), and that revision
    flagged every job still unfinished, new gestures too."""
    if job["kind"] == "delete":
        return "delete"
    if job["gesture"] not in parent_labels:
        return "train"
    return "add_frames" if job["options"].get("refine") or job["status"] == "SUCCESS" else "train"
