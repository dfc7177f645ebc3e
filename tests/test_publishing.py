"""Atomic publish: a version is visible only when every artifact is stored; failures leave nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from ghostouch.config import JOB_KILL_GRACE_SECONDS, Settings
from ghostouch.publishing import publish_model, renamed_in_report
from ghostouch.registry import repo
from ghostouch.registry.db import has_registry, migrate
from ghostouch.storage import LocalObjectStore, RetryPolicy, StorageError, TransientError
from ghostouch.sweep import SWEEP_REFUSE_OVER, LeftoverSweep, SweepRefused
from tests.test_registry import _postgres_url


class FlakyStore(LocalObjectStore):
    """A real local store whose writes of matching keys fail `failures` times (None: always)."""

    def __init__(self, root: Path, fail_suffix: str, failures: int | None) -> None:
        super().__init__(
            root,
            public_url="http://127.0.0.1:1",
            signing_secret=b"s" * 32,
            retry_policy=RetryPolicy(attempts=3, base_delay=0.0),
            sleep=lambda _s: None,
        )
        self.fail_suffix, self.failures, self.attempts = fail_suffix, failures, 0

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        if key.endswith(self.fail_suffix):
            self.attempts += 1
            if self.failures is None or self.attempts <= self.failures:
                raise TransientError("simulated upload timeout")
        super()._write(key, data, content_type)


def _publish(db_url: str, store: LocalObjectStore, code: str) -> None:
    publish_model(
        db_url,
        store,
        code=code,
        parent_code=None,
        owner="anonymous",
        kind="trained",
        gestures=[repo.GestureInfo("a", 0, [], 0), repo.GestureInfo("b", 1, [], 0)],
        tflite_uint8=b"uint8-model",
        tflite_float=b"float-model",
        metrics={},
        training_config={},
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    migrate(url)
    return url


def test_permanent_upload_failure_leaves_nothing_visible_or_orphaned(db_url: str, tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "objects", "_report.json", failures=None)
    with pytest.raises(StorageError, match="simulated upload timeout"):
        _publish(db_url, store, "mfailed")
    assert store.attempts == 3
    assert repo.get_model(db_url, "mfailed") is None
    assert store.list_keys("models/") == []


def test_transient_upload_failures_are_retried(db_url: str, tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "objects", ".tflite", failures=2)
    _publish(db_url, store, "mretried")
    model = repo.get_model(db_url, "mretried")
    assert model is not None and store.get_bytes(model.artifacts["tflite"]["key"]) == b"uint8-model"
    assert len(store.list_keys("models/")) == 4


def test_registry_failure_removes_stored_artifacts(db_url: str, tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "objects", "never", failures=0)
    _publish(db_url, store, "mtwice")
    before = store.list_keys("models/")
    with pytest.raises(ValueError, match="already exists"):
        _publish(db_url, store, "mtwice")
    assert store.list_keys("models/") == before


def test_leftover_files_are_swept_once_seen_twice(db_url: str, tmp_path: Path) -> None:
    """Files of a publish that died half-way go on the second sweep that finds them; registered
    versions' files never, and a file that appeared since the last sweep (a publish under way)
    waits for the next one."""
    store = FlakyStore(tmp_path / "objects", "never", failures=0)
    _publish(db_url, store, "mkept")
    kept = set(store.list_keys("models/"))
    assert len(kept) == 4
    store.put_bytes("models/mdead/00000001/mdead.tflite", b"half of a publish")
    store.put_bytes("models/original_app_model.tflite", b"not ours: never swept")
    sweep = LeftoverSweep(min_age_s=0.0)
    assert sweep.run(db_url, store) == []  # first sighting: maybe a publish under way
    store.put_bytes("models/mnew/00000002/mnew.tflite", b"a publish under way")
    assert sweep.run(db_url, store) == ["models/mdead/00000001/mdead.tflite"]
    left = {"models/mnew/00000002/mnew.tflite", "models/original_app_model.tflite"}
    assert set(store.list_keys("models/")) == kept | left
    _publish(db_url, store, "mnew2")  # registered meanwhile: its files are referenced
    assert sweep.run(db_url, store) == ["models/mnew/00000002/mnew.tflite"]
    assert sweep.run(db_url, store) == []
    assert set(store.list_keys("models/")) - kept - {"models/original_app_model.tflite"} == {
        key for key in store.list_keys("models/") if key.startswith("models/mnew2/")
    }


def test_the_sweep_leaves_the_files_of_a_job_still_publishing(db_url: str, tmp_path: Path) -> None:
    """A slow store can keep a job publishing for minutes, longer than the sweep's two listings
    are apart: files younger than the longest a job may run are never deleted."""
    store = FlakyStore(tmp_path / "objects", "never", failures=0)
    _publish(db_url, store, "mkept")
    young, old = "models/mslow/00000001/mslow.tflite", "models/mdead/00000001/mdead.tflite"
    store.put_bytes(young, b"a publish still under way")
    store.put_bytes(old, b"left by a job killed long ago")
    an_hour_ago = time.time() - 3600
    os.utime(store.local_path(old), (an_hour_ago, an_hour_ago))
    sweep = LeftoverSweep(min_age_s=Settings().leftover_min_age_seconds)
    assert sweep.run(db_url, store) == []
    assert sweep.run(db_url, store) == [old]
    assert sweep.run(db_url, store) == [] and store.exists(young)
    assert Settings(job_time_limit_seconds=60).leftover_min_age_seconds > 60 + JOB_KILL_GRACE_SECONDS


def test_storage_sweep_command_deletes_only_leftovers(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "data"
    stray = data / "objects" / "models" / "mgone" / "00000001" / "mgone.tflite"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half of a publish")
    foreign = data / "objects" / "models" / "legacy.tflite"
    foreign.write_bytes(b"not ours")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTOUCH_")}

    def sweep(*min_age: str) -> subprocess.CompletedProcess[str]:
        command = ["storage", "sweep", "--data-dir", str(data), "--wait", "0.1", *min_age]
        command = [sys.executable, "-m", "ghostouch.cli", *command]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)

    # A data directory without its registry (say GHOSTOUCH_DATABASE_URL forgotten): every file
    # would look unreferenced, so nothing is deleted and no empty registry is created.
    done = sweep()
    assert done.returncode == 2 and "no registry in sqlite:///" in done.stderr and "Traceback" not in done.stderr
    assert stray.exists() and not (data / "registry.sqlite3").exists()
    # Nor is a mistyped data directory created, nor a registry in an empty database.
    mistyped = subprocess.run(
        [sys.executable, "-m", "ghostouch.cli", "storage", "sweep", "--data-dir", str(tmp_path / "dta")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert mistyped.returncode == 2 and "no such directory" in mistyped.stderr and not (tmp_path / "dta").exists()
    pg = _postgres_url()
    empty_db = next(pg)
    try:
        command = [sys.executable, "-m", "ghostouch.cli", "storage", "sweep", "--data-dir", str(data)]
        with_pg = {**env, "GHOSTOUCH_DATABASE_URL": empty_db}
        refused = subprocess.run(command, env=with_pg, capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 2 and "no registry in postgresql" in refused.stderr, refused.stderr
        assert not has_registry(empty_db) and stray.exists()
    finally:
        next(pg, None)
    db_url = f"sqlite:///{data / 'registry.sqlite3'}"
    migrate(db_url)
    _publish(db_url, FlakyStore(data / "objects", "never", failures=0), "mkept")
    for days in ("-3", "1e6"):
        wrong = sweep("--keep-frames-days", days)
        assert wrong.returncode == 2 and "must be 0 to 3650 days" in wrong.stderr, wrong.stderr
    young = sweep()  # by default, files as young as a job may run are kept
    assert young.returncode == 0 and "deleted 0 model file(s)" in young.stdout and stray.exists(), young.stderr
    loose = repo.store_sample_set(db_url, FlakyStore(data / "objects", "never", failures=0), np.ones((20, 64)))
    unfinished = stray.parent / ".mgone.tflite.x1y2z3~tmp"  # a write killed half-way, long ago
    unfinished.write_bytes(b"half")
    os.utime(unfinished, (time.time() - 3600, time.time() - 3600))
    done = sweep("--min-age", "0")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 temporary file(s)" in done.stdout and not unfinished.exists()
    assert "deleted 1 model file(s)" in done.stdout and "models/mgone/00000001/mgone.tflite" in done.stdout
    assert not stray.exists() and foreign.exists()
    assert len(list((data / "objects" / "models" / "mkept").rglob("*.*"))) == 4
    assert "deleted 1 sample set(s) no version or recent job refers to" in done.stdout and loose in done.stdout
    assert not (data / "objects" / "samples" / f"{loose}.npy").exists()


def test_the_sweep_refuses_a_registry_that_looks_like_another_stores(db_url: str, tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "objects", "never", failures=0)
    store.put_bytes("models/mdead/00000001/mdead.tflite", b"left over")
    sweep = LeftoverSweep(min_age_s=0.0)
    sweep.run(db_url, store)
    with pytest.raises(SweepRefused, match="refers to none of the store's model files"):  # an empty registry
        sweep.run(db_url, store)
    # A registry with models of its own elsewhere (say, staging's) is as foreign to this store.
    elsewhere = FlakyStore(tmp_path / "elsewhere", "never", failures=0)
    _publish(db_url, elsewhere, "mstaging")
    with pytest.raises(SweepRefused, match="refers to none of the store's model files"):
        sweep.run(db_url, store)
    assert store.list_keys("models/") == ["models/mdead/00000001/mdead.tflite"]
    _publish(db_url, store, "mkept")  # 4 files
    for i in range(SWEEP_REFUSE_OVER):
        store.put_bytes(f"models/m{i}/00000001/m{i}.tflite", b"left over")
    sweep = LeftoverSweep(min_age_s=0.0)
    assert sweep.run(db_url, store) == []
    with pytest.raises(SweepRefused, match="11 of the 15 model files"):  # most of the store
        sweep.run(db_url, store)
    assert len(store.list_keys("models/")) == 15  # nothing deleted
    forced = LeftoverSweep(min_age_s=0.0, force=True)
    forced.run(db_url, store)
    assert len(forced.run(db_url, store)) == 11 and len(store.list_keys("models/")) == 4


def test_a_renamed_report_names_gestures_as_the_label_map_does() -> None:
    """Only gesture names change: the confusion matrix's "no gesture" column stays, even beside a
    gesture once called that, and a chain of renames is kept."""
    names = ["paper", "no gesture"]
    metrics = {
        "labels": names,
        "holdout_per_class_accuracy": {"paper": 1.0, "no gesture": 0.9},
        "holdout_confusion": {"rows": names, "columns": [*names, "no gesture"], "matrix": [[1, 0, 0], [0, 9, 1]]},
        "training_frames": {"paper": 80, "no gesture": 80},
        "orientation_twins": [["paper", "no gesture"]],
        "duplicate_check": {"existing_gesture": "paper", "shares": {"paper": 0.2, "no gesture": 0.1}},
    }
    once = renamed_in_report(metrics, "no gesture", "fist")
    assert once["labels"] == ["paper", "fist"] and once["orientation_twins"] == [["paper", "fist"]]
    assert once["holdout_confusion"]["columns"] == ["paper", "fist", "no gesture"]
    assert once["holdout_confusion"]["matrix"] == metrics["holdout_confusion"]["matrix"]
    assert set(once["holdout_per_class_accuracy"]) == set(once["training_frames"]) == {"paper", "fist"}
    assert once["duplicate_check"]["shares"] == {"paper": 0.2, "fist": 0.1}
    twice = renamed_in_report(once, "paper", "hand")
    assert twice["duplicate_check"]["existing_gesture"] == "hand"
    assert twice["renamed"] == {"from": "paper", "to": "hand"}
    assert twice["renames"] == [{"from": "no gesture", "to": "fist"}, {"from": "paper", "to": "hand"}]
    assert metrics["labels"] == names  # the parent's metrics are left as they were


def test_recorded_frames_nothing_needs_any_more_are_swept(db_url: str, tmp_path: Path) -> None:
    """Users' frames stay while a model version or a job that may run again holds them; those of
    requests that ended without a model go after `keep_days`, registry row and object."""
    from datetime import timedelta

    from ghostouch.registry import job_records
    from ghostouch.registry.db import session_scope
    from ghostouch.registry.schema import Job, utcnow
    from ghostouch.sweep import UnusedSampleSweep

    store = FlakyStore(tmp_path / "objects", "never", failures=0)
    sets = {
        name: repo.store_sample_set(db_url, store, np.full((20, 64), i, np.float32))
        for i, name in enumerate(("trained", "waiting", "refused_long_ago", "refused_today", "loose"))
    }
    publish_model(
        db_url,
        store,
        code="mwith",
        parent_code=None,
        owner="anonymous",
        kind="trained",
        gestures=[repo.GestureInfo("a", 0, [sets["trained"]], 20)],
        tflite_uint8=b"uint8-model",
        tflite_float=b"float-model",
        metrics={},
        training_config={},
    )
    for name, status, age_days in (("waiting", "PENDING", 30), ("refused_long_ago", "DUPLICATE", 8),
                                   ("refused_today", "FAILURE", 1)):  # fmt: skip
        job, _ = job_records.create_job(
            db_url, owner="anonymous", parent_code="mwith", gesture=name, sample_ref=sets[name], options={}
        )
        with session_scope(db_url) as s:
            row = s.get(Job, job["task_id"])
            assert row is not None
            row.status, row.updated_at = status, utcnow() - timedelta(days=age_days)
    sweep = UnusedSampleSweep(min_age_s=0.0, keep_days=7)
    assert sweep.run(db_url, store) == []  # first sighting: maybe a request about to record its job
    gone = sorted(f"samples/{sets[name]}.npy" for name in ("refused_long_ago", "loose"))
    assert sweep.run(db_url, store) == gone
    assert sweep.run(db_url, store) == []
    assert {key for key in store.list_keys("samples/")} == {
        f"samples/{sets[name]}.npy" for name in ("trained", "waiting", "refused_today")
    }
    with pytest.raises(repo.MissingSamples):  # the row went too: the same frames would be stored afresh
        repo.count_sample_frames(db_url, [sets["loose"]])
    assert repo.store_sample_set(db_url, store, np.full((20, 64), 4, np.float32)) == sets["loose"]
    assert len(repo.load_sample_sets(db_url, store, [sets["loose"], sets["trained"]])) == 40
