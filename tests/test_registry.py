"""The registry on SQLite and on a real PostgreSQL (127.0.0.1:5432, own throwaway database)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, text

from ghostouch.registry import job_records, repo
from ghostouch.registry.db import get_engine, migrate, session_scope
from ghostouch.storage import LocalObjectStore
from tests.conftest import IN_CI, run_together

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_url() -> Iterator[str]:
    import psycopg

    name = f"ghostouch_test_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(
            PG_ADMIN.replace("postgresql://", "postgresql://", 1), autocommit=True, connect_timeout=3
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required under CI: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    yield url
    get_engine(url).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    gen = _postgres_url()
    yield next(gen)
    next(gen, None)


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    migrate(empty_db_url)
    return empty_db_url


def test_jobs_queued_before_revision_0002_keep_refining(empty_db_url: str) -> None:
    """Before 0002 a training job naming a gesture its parent has refined it; jobs still
    unfinished at the upgrade keep that meaning, finished ones are left as they were."""
    migrate(empty_db_url, "0001")
    row = (
        "INSERT INTO jobs (task_id, owner, kind, parent_code, gesture, options, status, current_step, attempts, "
        "created_at, updated_at) VALUES (:id, 'anonymous', 'train', 'base_v1', 'rock', :options, :status, 'queued', 0, "
        ":now, :now)"
    )
    now = datetime.now(UTC)
    with get_engine(empty_db_url).begin() as conn:
        for task_id, status in (("queued", "PENDING"), ("done", "SUCCESS")):
            conn.execute(
                text(row), {"id": task_id, "options": '{"allow_duplicate": true}', "status": status, "now": now}
            )
    migrate(empty_db_url)
    queued, done = job_records.get_job(empty_db_url, "queued"), job_records.get_job(empty_db_url, "done")
    assert queued is not None and queued["options"] == {"allow_duplicate": True, "refine": True}
    assert done is not None and done["options"] == {"allow_duplicate": True}


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", public_url="http://127.0.0.1:1", signing_secret=b"k" * 32)


def frames(seed: int, n: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.03, (n, 64)).astype(np.float32)


def test_the_jobs_list_tells_old_jobs_by_what_they_did() -> None:
    """`action` in GET /models/{code}/jobs, for jobs from before and after revision 0002."""
    from ghostouch.api.models import job_action

    labels = ["paper", "rock", "scissors"]

    def job(gesture: str, status: str, **options: bool) -> dict:
        return {"kind": "train", "gesture": gesture, "status": status, "options": options}

    assert job_action({**job("rock", "SUCCESS"), "kind": "delete"}, labels) == "delete"
    assert job_action(job("rock", "SUCCESS", refine=True), labels) == "add_frames"
    assert job_action(job("rock", "PENDING", refine=True), labels) == "add_frames"
    assert job_action(job("rock", "DUPLICATE"), labels) == "train"  # a name the model has, refused
    assert job_action(job("rock", "PENDING"), labels) == "train"  # ... on its way to that
    assert job_action(job("rock", "SUCCESS"), labels) == "add_frames"  # refined before 0002
    assert job_action(job("ok", "SUCCESS", refine=True), labels) == "train"  # flagged by 0002, a new gesture
    assert job_action(job("ok", "SUCCESS"), labels) == "train"


def test_migrations_are_idempotent(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)
    assert repo.get_model(db_url, "base_v1") is None


def test_the_migrated_schema_is_the_one_the_code_declares(db_url: str) -> None:
    """Every table, column and index of `schema.py` is made by a migration, and no migration
    leaves one the code does not know: a schema change without its migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ghostouch.registry.schema import Base

    with get_engine(db_url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []
    with get_engine(db_url).connect() as conn:
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("jobs")}
    assert "ix_jobs_status" in indexes


def test_sample_sets_are_stored_once_and_round_trip(db_url: str, store: LocalObjectStore) -> None:
    a = frames(1)
    ref1 = repo.store_sample_set(db_url, store, a)
    ref2 = repo.store_sample_set(db_url, store, a.copy())
    assert ref1 == ref2 and len(store.list_keys("samples/")) == 1
    np.testing.assert_array_equal(repo.load_sample_sets(db_url, store, [ref1, ref1]), np.concatenate([a, a]))


def _publish(db_url: str, code: str, parent: str | None, gestures: list[repo.GestureInfo]) -> None:
    with session_scope(db_url) as s:
        repo.save_model(
            s,
            code=code,
            parent_code=parent,
            owner="anonymous",
            kind="trained",
            gestures=gestures,
            artifacts={},
            metrics={"x": 1},
            training_config={},
        )


def test_a_job_reads_each_sample_set_once(
    db_url: str, store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghostouch.jobs.samples import SampleSets, StoredFrames

    a, b, c = frames(1, 30), frames(2, 30), frames(3, 30)
    refs = [repo.store_sample_set(db_url, store, f) for f in (a, b, c)]
    reads: list[str] = []
    original = store.get_bytes
    monkeypatch.setattr(store, "get_bytes", lambda key: reads.append(key) or original(key))
    samples = SampleSets(db_url, store)
    np.testing.assert_array_equal(samples.newest(refs, 40), np.concatenate([b, c])[-40:])  # a is not read
    assert len(reads) == 2
    known = StoredFrames(samples, [repo.GestureInfo("g", 0, refs, 90)])
    np.testing.assert_array_equal(known["g"], np.concatenate([a, b, c]))
    np.testing.assert_array_equal(samples.newest(refs, 400), known["g"])
    assert len(reads) == 3 and samples.frames([]).shape == (0, 64)


def test_lineage_shares_samples_by_reference(db_url: str, store: LocalObjectStore) -> None:
    refs = [repo.store_sample_set(db_url, store, frames(i)) for i in range(3)]
    gestures = [repo.GestureInfo(f"g{i}", i, [r], 50) for i, r in enumerate(refs)]
    _publish(db_url, "root0", None, gestures)
    parent = "root0"
    for i in range(1, 50):
        new_ref = repo.store_sample_set(db_url, store, frames(100 + i, 20))
        gestures = [*gestures, repo.GestureInfo(f"n{i}", len(gestures), [new_ref], 20)]
        code = f"child{i}"
        _publish(db_url, code, parent, gestures)
        parent = code
    # 3 base blocks + 49 new blocks: nothing copied along the 50-version chain
    assert len(store.list_keys("samples/")) == 52
    model = repo.get_model(db_url, "child49")
    assert model is not None and model.label_map()["g0"] == 0 and model.label_map()["n49"] == 51
    assert repo.lineage(db_url, "child49")[-1] == "root0" and len(repo.lineage(db_url, "child49")) == 50


def test_jobs_and_idempotency_keys(db_url: str) -> None:
    job, created = job_records.create_job(
        db_url, owner="anonymous", parent_code="base_v1", gesture="g", sample_ref=None, options={}, idempotency_key="k1"
    )
    again, created_again = job_records.create_job(
        db_url, owner="anonymous", parent_code="base_v1", gesture="g", sample_ref=None, options={}, idempotency_key="k1"
    )
    assert created and not created_again and again["task_id"] == job["task_id"]
    other, created_other = job_records.create_job(
        db_url,
        owner="someone-else",
        parent_code="base_v1",
        gesture="g",
        sample_ref=None,
        options={},
        idempotency_key="k1",
    )
    assert created_other and other["task_id"] != job["task_id"]
    job_records.set_job(db_url, job["task_id"], status="FAILURE", error_info="why")
    stored = job_records.get_job(db_url, job["task_id"])
    assert stored is not None and stored["status"] == "FAILURE" and stored["error_info"] == "why"
    assert job_records.count_waiting(db_url) == 1  # `other` only
    assert stored["created_at"].endswith("+00:00")  # UTC, saying so, on either database
    # A retry of the request puts a failed job back in the queue, once however many retries race.
    assert job_records.queue_again(db_url, job["task_id"]) and not job_records.queue_again(db_url, job["task_id"])
    again_pending = job_records.get_job(db_url, job["task_id"])
    assert again_pending is not None and again_pending["status"] == "PENDING" and again_pending["error_info"] is None
    assert job_records.count_waiting(db_url) == 2  # `other`, and `job` back in the queue
    # Ids no job can have are simply not found (PostgreSQL refuses a NUL in a query outright).
    for nonsense in ("", "abc\x00def", "\x00", job["task_id"] + "\x00", "x" * 65, "../etc", "a b"):
        assert job_records.get_job(db_url, nonsense) is None


def test_concurrent_idempotent_submissions_create_one_job(db_url: str) -> None:
    results: list[str] = []

    def submit() -> None:
        job, _ = job_records.create_job(
            db_url,
            owner="anonymous",
            parent_code="base_v1",
            gesture="g",
            sample_ref=None,
            options={},
            idempotency_key="same",
        )
        results.append(job["task_id"])

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1


def test_model_codes_are_unguessable_and_path_safe() -> None:
    codes = {repo.new_code() for _ in range(1000)}
    assert len(codes) == 1000 and all(repo.is_valid_code(c) and len(c) >= 16 for c in codes)
    assert not repo.is_valid_code("../x") and not repo.is_valid_code("a/b") and not repo.is_valid_code("")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_first_migrations_of_processes_starting_together(kind: str, tmp_path: Path) -> None:
    """An API and workers started at once on a new database each migrate it; one at a time wins,
    the others find it up to date (PostgreSQL once failed with a duplicate alembic_version)."""
    gen = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    else:
        gen = _postgres_url()
        url = next(gen)
    try:
        run_together("from ghostouch.registry.db import migrate", "migrate(sys.argv[1])", [url], delay=4.0)
        assert repo.get_model(url, "base_v1") is None
    finally:
        if gen is not None:
            next(gen, None)


def _running_job(db_url: str, claimant: str) -> str:
    job, _ = job_records.create_job(
        db_url, owner="anonymous", parent_code="base_v1", gesture="g", sample_ref=None, options={}
    )
    assert job_records.claim_job(db_url, job["task_id"], claimant, 60, lambda _c: False, 3)
    return str(job["task_id"])


def test_a_running_job_is_claimed_again_only_when_its_worker_is_gone(db_url: str) -> None:
    task_id = _running_job(db_url, "host:1")
    never_gone = lambda _c: False  # noqa: E731
    assert not job_records.claim_job(db_url, task_id, "host:2", 60, never_gone, 5)  # running elsewhere
    assert not job_records.claim_job(db_url, task_id, "host:2", 60, lambda c: c == "host:3", 5)
    assert job_records.claim_job(db_url, task_id, "host:2", 60, lambda c: c == "host:1", 5)  # its claimant died
    assert not job_records.claim_job(db_url, task_id, "host:3", 60, lambda c: c == "host:1", 5)  # now host:2's
    assert job_records.heartbeat(db_url, task_id, "host:2") and not job_records.heartbeat(db_url, task_id, "host:1")
    assert not job_records.claim_job(db_url, task_id, "host:3", 60, never_gone, 5)
    assert job_records.claim_job(db_url, task_id, "host:3", 0, never_gone, 5)  # no heartbeat for 0 s: stale
    job = job_records.get_job(db_url, task_id)
    assert job is not None and job["status"] == "PROGRESS" and job["attempts"] == 3
    with pytest.raises(job_records.JobTakenOver):  # the worker that lost it can no longer write to it
        job_records.set_job(db_url, task_id, "host:2", status="SUCCESS")
    job_records.set_job(db_url, task_id, "host:3", status="SUCCESS")
    assert not job_records.claim_job(db_url, task_id, "host:4", 0, lambda _c: True, 5)  # finished stays finished


def test_a_job_that_keeps_killing_its_worker_fails_even_when_redelivered_at_once(db_url: str) -> None:
    task_id = _running_job(db_url, "host:1")
    for n in (2, 3):  # the broker redelivers as soon as the worker dies; the next one claims it
        assert job_records.claim_job(db_url, task_id, f"host:{n}", 60, lambda c, n=n: c == f"host:{n - 1}", 3)
    assert not job_records.claim_job(db_url, task_id, "host:4", 60, lambda c: c == "host:3", 3)
    job = job_records.get_job(db_url, task_id)
    assert job is not None and job["status"] == "FAILURE" and "stopped its worker 3 times" in job["error_info"]


def test_abandoned_jobs_go_back_to_the_queue_until_they_stopped_too_many_workers(db_url: str) -> None:
    alive, dead = _running_job(db_url, "host:10"), _running_job(db_url, "host:11")
    gone = lambda c: c == "host:11"  # noqa: E731
    assert job_records.release_abandoned_jobs(db_url, 60, gone, max_attempts=3) == [dead]
    released = job_records.get_job(db_url, dead)
    assert released is not None and released["status"] == "PENDING" and "worker stopped" in released["current_step"]
    still = job_records.get_job(db_url, alive)
    assert still is not None and still["status"] == "PROGRESS"
    for attempt in (2, 3):  # claimed and abandoned again, twice
        assert job_records.claim_job(db_url, dead, f"host:{20 + attempt}", 60, gone, 3)
        released_ids = job_records.release_abandoned_jobs(db_url, 60, lambda c: c.startswith("host:2"), max_attempts=3)
        assert released_ids == ([dead] if attempt < 3 else [])
    final = job_records.get_job(db_url, dead)
    assert final is not None and final["status"] == "FAILURE" and "stopped its worker 3 times" in final["error_info"]
    assert job_records.release_abandoned_jobs(db_url, 0, lambda _c: False, max_attempts=3) == [alive]  # stale heartbeat


def _ran(db_url: str, task_id: str, started_ago: float, beating_for: float) -> None:
    """The job's attempt started `started_ago` seconds ago; its last heartbeat came `beating_for` after."""
    from datetime import timedelta

    from sqlalchemy import update

    from ghostouch.registry.db import session_scope
    from ghostouch.registry.schema import Job, utcnow

    started = utcnow() - timedelta(seconds=started_ago)
    with session_scope(db_url) as s:  # (an ORM write would set updated_at to now)
        s.execute(
            update(Job)
            .where(Job.task_id == task_id)
            .values(
                started_at=started,
                updated_at=started + timedelta(seconds=beating_for),
                current_step="training the model",
            )
        )


def test_a_job_whose_worker_was_killed_at_its_time_limit_fails_saying_so(db_url: str) -> None:
    """A call that hung and could not be interrupted: Celery kills the process past the limit.
    Training it again would hang again, for as long (three times 11 minutes, by default), while
    the app polls a job in PROGRESS; it ends FAILURE naming the limit, retryable. A job whose
    worker died early is trained again, however late that is found."""
    gone = lambda c: c in ("host:1", "host:2")  # noqa: E731
    swept, claimed = _running_job(db_url, "host:1"), _running_job(db_url, "host:2")
    early, young = _running_job(db_url, "host:1"), _running_job(db_url, "host:1")
    for task_id in (swept, claimed):
        _ran(db_url, task_id, started_ago=700, beating_for=650)  # alive past the limit, then killed
    _ran(db_url, early, started_ago=900, beating_for=5)  # killed early (out of memory), found late
    _ran(db_url, young, started_ago=100, beating_for=90)  # killed early, found at once
    assert not job_records.claim_job(db_url, claimed, "host:3", 60, gone, 3, time_limit_s=600)  # redelivered
    assert job_records.get_job(db_url, claimed)["status"] == "FAILURE"  # type: ignore[index]
    released = job_records.release_abandoned_jobs(db_url, 60, gone, 3, time_limit_s=600)  # swept
    assert sorted(released) == sorted([early, young])
    for task_id in (swept, claimed):
        job = job_records.get_job(db_url, task_id)
        assert job is not None and job["status"] == "FAILURE" and job["error_detail"] == {"retryable": True}
        assert job["error_info"] == (
            "the job did not finish within its time limit (600 s, at: training the model); please retry"
        )
    for task_id in (early, young):  # trained again
        assert job_records.claim_job(db_url, task_id, "host:3", 60, gone, 3, time_limit_s=600)


def test_a_release_racing_a_new_claim_changes_nothing(db_url: str) -> None:
    """Between a sweeper's read and its write another worker claims the job: the release is a
    compare-and-set on what the sweeper saw, so the new claim stands."""
    task_id = _running_job(db_url, "host:1")
    raced: list[bool] = []

    def gone_and_raced(claimant: str) -> bool:
        if claimant == "host:1" and not raced:
            raced.append(True)
            assert job_records.claim_job(db_url, task_id, "host:2", 60, lambda c: c == "host:1", 3)
        return claimant == "host:1"

    assert job_records.release_abandoned_jobs(db_url, 60, gone_and_raced, max_attempts=3) == [] and raced
    job = job_records.get_job(db_url, task_id)
    assert job is not None and job["status"] == "PROGRESS" and job["attempts"] == 2
    assert job_records.heartbeat(db_url, task_id, "host:2")


def test_a_job_waiting_too_long_in_the_queue_is_sent_again_once_per_period(db_url: str) -> None:
    job, _ = job_records.create_job(
        db_url, owner="anonymous", parent_code="base_v1", gesture="g", sample_ref=None, options={}
    )
    assert job_records.pending_jobs_to_resend(db_url, 60) == []  # just queued
    assert job_records.pending_jobs_to_resend(db_url, 0) == [job["task_id"]]
    assert job_records.pending_jobs_to_resend(db_url, 60) == []  # just sent again: not before 60 s
    assert job_records.claim_job(db_url, job["task_id"], "host:1", 60, lambda _c: False, 3)
    assert job_records.pending_jobs_to_resend(db_url, 0) == []  # running, not waiting


def test_times_are_told_in_utc_whatever_zone_the_database_answers_in() -> None:
    from datetime import timedelta, timezone

    from ghostouch.registry.schema import iso_utc

    assert iso_utc(datetime(2026, 11, 27, 12, 0)) == "2026-11-27T12:00:00+00:00"  # SQLite: no zone
    paris = datetime(2026, 11, 27, 13, 0, tzinfo=timezone(timedelta(hours=1)))  # a session's zone
    assert iso_utc(paris) == "2026-11-27T12:00:00+00:00"


def test_a_job_is_given_back_only_by_its_worker_and_only_so_often(db_url: str) -> None:
    task_id = _running_job(db_url, "host:1")
    assert not job_records.give_back(db_url, task_id, "host:2", 3)  # not its worker
    assert job_records.give_back(db_url, task_id, "host:1", 3)
    job = job_records.get_job(db_url, task_id)
    assert job is not None and job["status"] == "PENDING" and "queued again" in job["current_step"]
    for n in (2, 3):
        assert job_records.claim_job(db_url, task_id, f"host:{n}", 60, lambda _c: False, 3)
        assert job_records.give_back(db_url, task_id, f"host:{n}", 3) == (n < 3)  # the third run is the last
    job = job_records.get_job(db_url, task_id)
    assert job is not None and job["status"] == "PROGRESS" and job["attempts"] == 3
