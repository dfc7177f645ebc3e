"""The body of a training job, free of Celery: parent + new frames -> published child model."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import InterfaceError, OperationalError

from ghostouch.config import BASE_CODE, Settings
from ghostouch.engine.duplicates import check_duplicate
from ghostouch.engine.trainer import EngineConfig, GestureFrames, ParentModel, train_gesture_model
from ghostouch.engine.verify import LiteModel, ModelCheckFailed
from ghostouch.jobs import recovery
from ghostouch.jobs.samples import SampleSets, StoredFrames
from ghostouch.names import lookalike_in
from ghostouch.publishing import publish_model
from ghostouch.registry import job_records, repo
from ghostouch.storage import ObjectNotFound, ObjectStore, StorageError, build_store

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A reason to end the job as FAILURE, phrased for the user."""


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db_url: str
    store: ObjectStore


_contexts: dict[str, WorkerContext] = {}


def context_for(settings: Settings) -> WorkerContext:
    """One registry URL and object store per distinct configuration, reused across jobs."""
    key = settings.model_dump_json()
    if key not in _contexts:
        store = build_store(settings.storage_settings())
        _contexts[key] = WorkerContext(settings, settings.resolved_database_url, store)
    return _contexts[key]


def run_training_job(ctx: WorkerContext, task_id: str, engine_config: EngineConfig | None = None) -> None:
    job = job_records.get_job(ctx.db_url, task_id)
    if job is None:
        raise LookupError(f"job {task_id} is not in the registry")
    me = recovery.this_process()
    limit = ctx.settings.job_time_limit_seconds
    if not job_records.claim_job(
        ctx.db_url,
        task_id,
        me,
        recovery.STALE_JOB_SECONDS,
        recovery.is_abandoned,
        recovery.MAX_ATTEMPTS,
        time_limit_s=limit,
    ):
        log.info("job %s is finished, failed too often or is being run by another worker; skipping", task_id)
        return
    job["claimed_by"] = me  # every write of this job below holds only while it is still ours
    with recovery.heartbeat(ctx.db_url, task_id, me):
        try:
            _run_claimed(ctx, job, engine_config)
        except job_records.JobTakenOver as exc:
            log.warning("stopped job %s: %s", task_id, exc)


def _set(ctx: WorkerContext, job: dict[str, Any], **fields: Any) -> None:
    job_records.set_job(ctx.db_url, job["task_id"], job["claimed_by"], **fields)


def _run_claimed(ctx: WorkerContext, job: dict[str, Any], engine_config: EngineConfig | None) -> None:
    clock = StepClock()

    def step(text: str) -> None:
        clock.lap(text)
        _set(ctx, job, current_step=text)

    def fail(reason: str, retryable: bool = False) -> None:
        # `retryable`: a passing fault (the store, a hang, a bug hit by chance); the same request
        # sent again (as it was, or with its key) runs this job again (api/queueing._replay).
        detail = {"retryable": True} if retryable else None
        _set(ctx, job, status="FAILURE", current_step="failed", error_info=reason, error_detail=detail)

    try:
        _train(ctx, job, step, engine_config or EngineConfig(), clock)
    except job_records.JobTakenOver:
        raise
    except JobFailed as exc:
        fail(str(exc))
    except ModelCheckFailed as exc:
        fail(f"the exported model failed verification: {exc}")
    except (repo.MissingSamples, ObjectNotFound) as exc:  # retrying cannot bring them back
        log.error("job %s: %s", job["task_id"], exc)
        if job["parent_code"] == BASE_CODE:  # what every fresh install sends: only the operator can help
            fail("the server's base model files are missing from its storage; please try again later")
        else:
            fail("the parent model's stored files are missing; train from another model")
    except StorageError as exc:  # the details (keys, bucket, HTTP errors) are for the log
        log.warning("job %s: storage failed: %s", job["task_id"], exc)
        fail("the model storage is unavailable; please retry", retryable=True)
    except (OperationalError, InterfaceError):  # the registry connection cut mid-query (a failover)
        log.warning("job %s: the registry connection failed; queued again", job["task_id"], exc_info=True)
        if not job_records.give_back(ctx.db_url, job["task_id"], job["claimed_by"], recovery.MAX_ATTEMPTS):
            fail("the model registry was unavailable; please retry", retryable=True)
            return
        raise JobGivenBack(job["task_id"]) from None
    except SoftTimeLimitExceeded:  # a call that hung (storage, database); nothing was published
        limit = ctx.settings.job_time_limit_seconds
        log.error("job %s: stopped after %.0f s, its time limit (%s)", job["task_id"], limit, clock.current)
        fail(job_records.time_limit_message(limit, clock.current), retryable=True)
    except Exception as exc:
        log.exception("training job %s failed", job["task_id"])
        fail(f"internal error while training ({type(exc).__name__}); please retry", retryable=True)


class JobGivenBack(Exception):
    """The job went back to PENDING after a passing fault: the task queues it again."""


class StepClock:
    """Seconds spent in each job step, reported with the result."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._name: str | None = None
        self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.laps[self._name] = round(self.laps.get(self._name, 0.0) + now - self._start, 4)
        self._name, self._start = name, now

    @property
    def current(self) -> str:
        return self._name or "starting"


def _duplicate_check(
    parent: ParentModel, gesture: str, new_frames: np.ndarray, known: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Scores of the new frames against the parent's gestures (engine/duplicates.py): the parent
    model as the phone runs it, then the hand shape against the recorded frames of `known`."""
    ignore = gesture if gesture in parent.labels else None
    return check_duplicate(parent.lite, parent.labels, new_frames, known=known, ignore=ignore).as_dict()


def _train(ctx: WorkerContext, job: dict[str, Any], step: Any, engine_config: EngineConfig, clock: StepClock) -> None:
    step("loading the parent model")
    parent = repo.get_model(ctx.db_url, job["parent_code"])
    if parent is None:
        raise JobFailed(f"model {job['parent_code']} no longer exists")
    gesture = job["gesture"]
    # The parent as the phone runs it: the duplicate check asks it, and the child keeps its answers.
    lite = LiteModel.load(ctx.store.get_bytes(parent.artifacts["tflite"]["key"]))
    refined = frozenset({gesture}) if gesture in parent.labels else frozenset()  # new frames may narrow it
    parent_model = ParentModel(lite, parent.labels, not_kept=refined)
    step("collecting training data")
    samples = SampleSets(ctx.db_url, ctx.store)
    if job["kind"] == "delete":
        plan: Plan | None = _plan_delete(ctx, samples, parent, gesture)
    else:
        plan = _plan_train(ctx, samples, job, parent, parent_model, step)
    if plan is not None:
        _train_and_publish(ctx, job, parent, parent_model, plan, engine_config, step, clock)


@dataclass
class Plan:
    """What the child version will be: its gestures (in output order) and their frames."""

    infos: list[repo.GestureInfo]
    training: list[GestureFrames]
    description: str
    extra: dict[str, Any]


def _plan_delete(ctx: WorkerContext, samples: SampleSets, parent: repo.ModelInfo, gesture: str) -> Plan:
    remaining = [g for g in parent.gestures if g.name != gesture]
    if len(remaining) == len(parent.gestures):
        raise JobFailed(f"model {parent.code} has no gesture '{gesture}'")
    # Later gestures move down one index: the label map of the result says where each one is.
    infos, training = _gesture_data(ctx, samples, remaining, None, None)
    infos = [repo.GestureInfo(g.name, i, g.sample_refs, g.n_frames) for i, g in enumerate(infos)]
    return Plan(infos, training, f"{parent.code} - {gesture}", {"deleted": gesture})


def _plan_train(
    ctx: WorkerContext,
    samples: SampleSets,
    job: dict[str, Any],
    parent: repo.ModelInfo,
    parent_model: ParentModel,
    step: Any,
) -> Plan | None:
    """Parent gestures plus the new one (or, for POST .../frames, the refined one); None when the
    job ended as DUPLICATE: a name the parent has, or a pose it already knows."""
    gesture = job["gesture"]
    refined = gesture in parent.labels
    existing = lookalike_in(gesture, parent.labels)
    if existing is not None and not (refined and job["options"].get("refine")):
        # An app appends the name it sent at index max + 1 of its label map, so a name the model
        # already has cannot come back as a new output; adding frames is an explicit request.
        # A name that differs only by what no one sees (a variation selector) would show twice.
        path = f"/models/{parent.code}/gestures/{quote(existing, safe='')}/frames"
        looks = (
            ""
            if existing == gesture
            else f", which looks the same as '{gesture}' (they differ only in unseen characters or width)"
        )
        _end_duplicate(
            ctx,
            job,
            f"the model already has a gesture named '{existing}'{looks}; give the new gesture another name, "
            f"or add frames to '{existing}' with POST {path}",
            # same_name: the name is taken; looks_alike: by a spelling that only looks the same
            {"is_duplicate": True, "existing_gesture": existing, "same_name": True, "looks_alike": existing != gesture},
        )
        return None
    new_ref = job["sample_ref"]
    try:
        new_frames = samples.frames([new_ref])
    except (repo.MissingSamples, ObjectNotFound):  # the API stored them a moment ago: a storage this worker cannot see
        log.error("job %s: frames %s not in %s: not the API's storage?", job["task_id"], new_ref, ctx.store.description)
        raise JobFailed(
            "the server could not find this request's frames in its storage: its worker likely cannot see the "
            "storage the API saved them to (a server setup problem); sending the request again will not help "
            "until that is fixed"
        ) from None
    if refined:
        new_ref, new_frames = _unstored_frames(ctx, samples, parent, gesture, new_ref, new_frames)
    infos, training = _gesture_data(ctx, samples, parent.gestures, gesture, new_ref)
    duplicate: dict[str, Any] | None = None
    if not job["options"].get("allow_duplicate"):
        step("checking for duplicate gestures")
        duplicate = _duplicate_check(parent_model, gesture, new_frames, StoredFrames(samples, parent.gestures))
        if duplicate["is_duplicate"]:
            hand = (
                "; it was recorded with the other hand, and a left hand is read as the mirror image of a right "
                "one, so a pose that points or faces the other way with the other hand is the same gesture"
                if duplicate["other_hand"]
                else ""
            )
            _end_duplicate(
                ctx,
                job,
                f"'{gesture}' looks like the existing gesture '{duplicate['existing_gesture']}' "
                f"({duplicate['similarity']:.0%} of the frames were recognized as it{hand}); "
                "record a different pose, or send allow_duplicate=true to train it anyway",
                duplicate,
            )
            return None
    if not refined:
        infos.append(repo.GestureInfo(gesture, len(infos), [new_ref], len(new_frames)))
        training.append(GestureFrames(gesture, new_frames[-ctx.settings.max_frames_per_gesture :]))
    return Plan(infos, training, f"{parent.code} + {gesture}", {"refined": refined, "duplicate_check": duplicate})


def _unstored_frames(
    ctx: WorkerContext,
    samples: SampleSets,
    parent: repo.ModelInfo,
    gesture: str,
    new_ref: str,
    new_frames: np.ndarray,
) -> tuple[str, np.ndarray]:
    """Frames added to `gesture` that it does not hold yet (a re-sent recording would count and
    weigh twice), stored as a set of their own when some were left out. JobFailed when none are
    new, or when some are stored under another gesture (one frame cannot show two gestures)."""
    stored = StoredFrames(samples, parent.gestures)
    sent = [frame.tobytes() for frame in new_frames]
    for other in stored:
        if other != gesture:
            theirs = {frame.tobytes() for frame in stored[other]}
            shared = sum(frame in theirs for frame in sent)
            if shared:
                raise JobFailed(
                    f"{shared} of these frames are stored under the gesture '{other}'; a frame can show one "
                    f"gesture only: send frames recorded for '{gesture}'"
                )
    held = {frame.tobytes() for frame in stored[gesture]}
    fresh = np.array([frame not in held for frame in sent])
    if not fresh.any():
        raise JobFailed(f"the gesture '{gesture}' already holds all of these frames; record new ones")
    if fresh.all():
        return new_ref, new_frames
    kept = new_frames[fresh]
    return repo.store_sample_set(ctx.db_url, ctx.store, kept), kept


def _end_duplicate(ctx: WorkerContext, job: dict[str, Any], message: str, scores: dict[str, Any]) -> None:
    _set(
        ctx,
        job,
        status="DUPLICATE",
        current_step="duplicate gesture",
        error_info=message,
        error_detail={"duplicate": scores},
    )


def _gesture_data(
    ctx: WorkerContext,
    samples: SampleSets,
    gestures: list[repo.GestureInfo],
    refine: str | None,
    new_ref: str | None,
) -> tuple[list[repo.GestureInfo], list[GestureFrames]]:
    """Each gesture's sample references and training frames, with `new_ref` added to `refine`.
    The child keeps every reference, also those beyond the training cap: the duplicate check of
    its own children compares with all of them, and the frames count is what is stored."""
    infos: list[repo.GestureInfo] = []
    training: list[GestureFrames] = []
    for g in gestures:
        refs = [*g.sample_refs, new_ref] if g.name == refine and new_ref else list(g.sample_refs)
        stored = repo.count_sample_frames(ctx.db_url, refs)
        infos.append(repo.GestureInfo(g.name, g.output_index, refs, stored))
        training.append(GestureFrames(g.name, samples.newest(refs, ctx.settings.max_frames_per_gesture)))
    return infos, training


def lineage_config(engine_config: EngineConfig, parent: repo.ModelInfo) -> EngineConfig:
    """The child keeps the world-landmark gate off when its parent had it off: a lineage that
    holds many people's frames (bases.MANY_HANDS_CONFIG), or one from before the gate
    existed (no such setting recorded), never turns it on."""
    inherited = bool(parent.training_config.get("gate_3d", False))
    return replace(engine_config, gate_3d=engine_config.gate_3d and inherited)


def check_app_indices(
    job: dict[str, Any], parent: repo.ModelInfo, infos: list[repo.GestureInfo], outputs: list[str]
) -> None:
    """The apps' rule (CLIENT_CONTRACT.md): a child keeps every parent gesture at its index and
    puts a new one last, so an app that appends the name it sent at max + 1 stays right. Only a
    delete, which the apps cannot send, moves gestures."""
    label_map = {g.name: g.output_index for g in infos}
    problems = [f"output {i} is {name!r}, the label map says {label_map.get(name)}" for i, name in enumerate(outputs)
                if label_map.get(name) != i]  # fmt: skip
    if job["kind"] != "delete":
        problems += [f"{g.name!r} moved from {g.output_index}" for g in parent.gestures
                     if label_map.get(g.name) != g.output_index]  # fmt: skip
    if problems:
        raise ModelCheckFailed("the apps' label indices would change: " + "; ".join(problems))


def _train_and_publish(
    ctx: WorkerContext,
    job: dict[str, Any],
    parent: repo.ModelInfo,
    parent_model: ParentModel,
    plan: Plan,
    engine_config: EngineConfig,
    step: Any,
    clock: StepClock,
) -> None:
    infos, training, extra = plan.infos, plan.training, plan.extra
    engine_config = lineage_config(engine_config, parent)
    trained = train_gesture_model(training, engine_config, progress=step, parent=parent_model)
    check_app_indices(job, parent, infos, trained.labels)
    step("publishing the model")
    code = repo.new_code()
    label_map = {g.name: g.output_index for g in infos}
    result = {"model_code": code, "label_map": label_map, **extra, "step_seconds": clock.laps}
    metrics = {
        **trained.metrics,
        **({"duplicate_check": extra["duplicate_check"]} if extra.get("duplicate_check") else {}),
    }

    def finish(s: Any) -> None:
        clock.lap("done")
        job_records.update_job(
            s, job["task_id"], job["claimed_by"], status="SUCCESS", current_step="done", result=result, child_code=code
        )

    publish_model(
        ctx.db_url,
        ctx.store,
        code=code,
        parent_code=parent.code,
        owner=job["owner"],
        kind="trained",
        gestures=infos,
        tflite_uint8=trained.tflite_uint8,
        tflite_float=trained.tflite_float,
        metrics=metrics,
        training_config=engine_config.describe(),
        description=plan.description,
        in_same_transaction=finish,
    )
