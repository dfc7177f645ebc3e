"""Worker side: the Celery task and process start-up (TensorFlow is imported here, once)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from ghostouch.config import Settings, get_settings
from ghostouch.jobs.celery_app import TRAIN_TASK, enqueue_training, forget_warm, make_celery, mark_warm
from ghostouch.jobs.recovery import requeue_lost_jobs, start_sweeper

log = logging.getLogger(__name__)
NODE_ENV = "GHOSTOUCH_WORKER_NODE"  # the Celery node name, set by `ghostouch worker`
WARM_REPORT_SECONDS = 10.0


def node_name(name: str | None = None) -> str:
    """This worker's Celery node name, `NAME-PID-RANDOM@HOST` (NAME: `ghostouch worker --name`,
    default "worker"). The random part keeps it unique where the host name and pid are not:
    containers sharing a host name each start their worker as pid 1 or so, and `/readyz` counts
    the nodes that answer and marks each warm under its name."""
    return f"{name or 'worker'}-{os.getpid()}-{secrets.token_hex(3)}@{socket.gethostname()}"


def build_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings)

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True)
    def train_gesture(self: Any, task_id: str) -> None:
        from ghostouch.jobs.training import JobGivenBack, context_for, run_training_job

        try:
            run_training_job(context_for(settings), task_id)
        except JobGivenBack:  # (if the broker is down too, the sweep sends it once it is back)
            enqueue_training(self.app, task_id)

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
        return
    node = os.environ.get(NODE_ENV)
    if node:
        threading.Thread(target=_report_warm, args=(node,), name="warm-reporter", daemon=True).start()


def _report_warm(node: str) -> None:
    """While this pool process lives, keep its node marked warm in the broker (also in a broker
    started empty after the last one died); the mark expires 30 s after the process is gone."""
    while True:
        try:
            mark_warm(app, node)
        except Exception:  # pragma: no cover - the broker is down: /readyz says so anyway
            log.warning("could not report worker %s warm; trying again", node)
        time.sleep(WARM_REPORT_SECONDS)


def forget_warm_state(node: str) -> None:
    """A worker that stops is no longer counted warm (rather than for 30 s more)."""
    try:
        forget_warm(app, node)
    except Exception:  # pragma: no cover - broker down: its mark, if any, expires in 30 s
        log.warning("could not clear the warm state of %s", node)


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


@worker_shutdown.connect
def _forget_warm(**_: Any) -> None:
    node = os.environ.get(NODE_ENV)
    if node:
        forget_warm_state(node)


app = build_worker_app(get_settings())
