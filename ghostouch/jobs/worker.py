"""Worker side: the Celery task and process start-up (TensorFlow is imported here, once)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from ghostouch.config import Settings, get_settings
from ghostouch.jobs.celery_app import TRAIN_TASK, enqueue_training, make_celery
from ghostouch.registry import repo

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

    try:
        warm_up()
    except Exception:  # pragma: no cover - a cold first job is slower, not broken
        log.exception("warm-up failed")


def requeue_lost_jobs(celery: Celery, settings: Settings) -> list[str]:
    """Queue again the jobs still PENDING after `requeue_after_seconds` (a broker flush or crash may
    have lost their messages); claiming in `run_training_job` makes repeated messages harmless."""
    task_ids = repo.pending_jobs_older_than(settings.resolved_database_url, settings.requeue_after_seconds)
    for task_id in task_ids:
        enqueue_training(celery, task_id)
    return task_ids


@worker_ready.connect
def _requeue_on_start(**_: Any) -> None:
    try:
        requeued = requeue_lost_jobs(app, get_settings())
        if requeued:
            log.info("re-queued %d pending job(s) whose messages may have been lost", len(requeued))
    except Exception:  # pragma: no cover - best effort; the jobs stay PENDING and visible
        log.exception("could not re-queue pending jobs")


app = build_worker_app(get_settings())
