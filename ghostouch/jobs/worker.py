"""Worker side: the Celery task and process start-up (TensorFlow is imported here, once)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from ghostouch.config import Settings, get_settings
from ghostouch.jobs.celery_app import TRAIN_TASK, make_celery
from ghostouch.jobs.recovery import requeue_lost_jobs, start_sweeper

log = logging.getLogger(__name__)


def build_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings)

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True)
    def train_gesture(self: Any, task_id: str) -> None:
        from ghostouch.jobs.training import context_for, run_training_job

        run_training_job(context_for(settings), task_id)

    return app


@worker_process_init.connect
def _warm_up(**_: Any) -> None:
    """Import TensorFlow and trace the training graph before the first job arrives."""
    from ghostouch.engine.warmup import warm_up
    from ghostouch.registry.db import forget_connections

    forget_connections()  # the main process's (its sweeper's) database connections stay its own

    try:
        warm_up()
    except Exception:  # pragma: no cover - a cold first job is slower, not broken
        log.exception("warm-up failed")


@worker_ready.connect
def _recover_on_start(**_: Any) -> None:
    settings = get_settings()
    try:
        requeued = requeue_lost_jobs(app, settings)
        if requeued:
            log.info("re-queued %d job(s) whose messages or workers were lost", len(requeued))
    except Exception:  # pragma: no cover - best effort; the sweeper and the next start try again
        log.exception("could not re-queue lost jobs")
    start_sweeper(app, settings)


app = build_worker_app(get_settings())
