"""The Celery application shared by the API (to enqueue) and the workers (to run).

Job state lives in the registry, not in Celery's result backend: the apps never see Celery's
own states (STARTED, RETRY, ...), and records outlive broker restarts and flushes.
"""

from __future__ import annotations

from celery import Celery

from ghostouch.config import JOB_KILL_GRACE_SECONDS, Settings

TRAIN_TASK = "ghostouch.train_gesture"
QUEUE = "ghostouch"


# The API's broker calls happen while a phone waits (OkHttp gives up after 10 s): a broker that
# stops answering costs a request a few waits of this many seconds (one retry of the publish on a
# new connection; 7.6 s in tests/test_operations.py), then a 503.
API_BROKER_TIMEOUT_SECONDS = 2.5


def make_celery(settings: Settings, answering_phones: bool = False) -> Celery:
    app = Celery("ghostouch", broker=settings.resolved_broker_url, set_as_current=False)
    transport: dict[str, float] = {"visibility_timeout": 3600}
    if answering_phones:
        timeout = API_BROKER_TIMEOUT_SECONDS
        transport.update(socket_timeout=timeout, socket_connect_timeout=timeout)
        app.conf.update(
            broker_connection_timeout=timeout,
            task_publish_retry_policy={"max_retries": 1, "interval_start": 0},
        )
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_track_started=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A new pool process imports TensorFlow and traces the training graph before it reports
        # up (5-15 s on two busy cores); Celery's default of 4 s killed replacements in a loop.
        worker_proc_alive_timeout=60.0,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        # A job stuck in a call that never returns (storage, database) is stopped: at the soft
        # limit the task raises `SoftTimeLimitExceeded` (the job ends FAILURE, saying so); if it
        # cannot, the pool process is killed and the job is recovered as abandoned.
        task_soft_time_limit=settings.job_time_limit_seconds,
        task_time_limit=settings.job_time_limit_seconds + JOB_KILL_GRACE_SECONDS,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def enqueue_training(app: Celery, task_id: str) -> None:
    app.send_task(TRAIN_TASK, args=[task_id], task_id=task_id, queue=QUEUE)


# A worker's pool process marks its node warm (TensorFlow imported, training traced) under this
# key in the broker's Redis; `/readyz` counts only warm workers, so "ready" means a job starts at
# once, not after a warm-up of 5-45 s.
WARM_KEY = "ghostouch:warm:{}"
# The worker re-reports every 10 s: a node that stops doing so (killed) is no longer counted warm
# after this long. Node names are unique per process (`worker.node_name`), never reused.
WARM_TTL_SECONDS = 30


def mark_warm(app: Celery, node: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.client.set(WARM_KEY.format(node), "1", ex=WARM_TTL_SECONDS)


def forget_warm(app: Celery, node: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.client.delete(WARM_KEY.format(node))


def warm_nodes(app: Celery, nodes: list[str]) -> set[str]:
    """Which of these worker nodes have a warm pool process."""
    if not nodes:
        return set()
    with app.connection_for_write() as connection:
        values = connection.default_channel.client.mget([WARM_KEY.format(n) for n in nodes])
    return {node for node, value in zip(nodes, values, strict=True) if value}
