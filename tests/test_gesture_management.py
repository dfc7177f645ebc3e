"""Gesture management through HTTP: rename, delete, add frames; each makes a new version."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import quote

import httpx
import numpy as np

from ghostouch.config import Settings
from ghostouch.engine import hands
from ghostouch.engine.verify import LiteModel
from ghostouch.registry import job_records
from tests.conftest import OPERATOR, Service, poll_like_android


def _child_with_call(service: Service) -> str:
    frames = hands.generate_recording("call", 80, np.random.default_rng(8), handedness=1.0).tolist()
    r = httpx.post(
        f"{service.url}/train",
        json={"model_code": "base_v1", "gesture": "call", "landmarks": frames, "allow_duplicate": True},
    )
    body, _ = poll_like_android(service.url, r.json()["task_id"])
    assert body["status"] == "SUCCESS", body
    return str(body["result"]["model_code"])


def test_rename_makes_a_new_version_with_the_same_model(service: Service) -> None:
    code = _child_with_call(service)
    r = httpx.post(f"{service.url}/models/{code}/gestures/call/rename", json={"new_name": "전화"})
    assert r.status_code == 201, r.text
    renamed = r.json()
    assert renamed["parent_code"] == code and renamed["label_map"]["전화"] == 3 and "call" not in renamed["label_map"]
    assert httpx.get(f"{service.url}/models/{renamed['model_code']}/labels").json()["전화"] == 3
    old = httpx.get(httpx.get(f"{service.url}/models/{code}").json()["tflite_url"]).content
    new = httpx.get(renamed["tflite_url"]).content
    assert old == new
    assert httpx.get(f"{service.url}/models/{code}/labels").json()["call"] == 3  # parent unchanged
    # The version's report (stored and in /models) names its gestures as its label map does.
    described = httpx.get(f"{service.url}/models/{renamed['model_code']}").json()
    report = httpx.get(described["report_url"]).json()
    for metrics in (described["metrics"], report):
        assert metrics["labels"] == ["paper", "rock", "scissors", "전화"]
        assert (
            set(metrics["holdout_per_class_accuracy"]) == set(metrics["training_frames"]) == set(renamed["label_map"])
        )
        assert metrics["holdout_confusion"]["rows"] == metrics["labels"]
        assert metrics["holdout_confusion"]["columns"] == [*metrics["labels"], "no gesture"]
        assert metrics["renamed"] == {"from": "call", "to": "전화"}
    assert (
        httpx.post(f"{service.url}/models/{code}/gestures/rock/rename", json={"new_name": "paper"}).status_code == 409
    )
    lookalike = httpx.post(f"{service.url}/models/{code}/gestures/rock/rename", json={"new_name": "paper\ufe0f"})
    assert lookalike.status_code == 409 and "which looks the same as" in lookalike.json()["detail"], lookalike.text
    assert httpx.post(f"{service.url}/models/{code}/gestures/nope/rename", json={"new_name": "x"}).status_code == 404
    same = httpx.post(f"{service.url}/models/{code}/gestures/rock/rename", json={"new_name": "rock"})
    assert same.status_code == 409 and "already has that name" in same.json()["detail"]
    # A gesture may take a spelling that looks like its own (here: a plain one for a full-width one).
    wide = httpx.post(
        f"{service.url}/models/{code}/gestures/rock/rename", json={"new_name": "\uff52\uff4f\uff43\uff4b"}
    )
    assert wide.status_code == 201, wide.text
    plain = httpx.post(
        f"{service.url}/models/{wide.json()['model_code']}/gestures/\uff52\uff4f\uff43\uff4b/rename",
        json={"new_name": "rock"},
    )
    assert plain.status_code == 201 and plain.json()["label_map"]["rock"] == 1, plain.text


def test_delete_retrains_without_the_gesture(service: Service) -> None:
    code = _child_with_call(service)
    r = httpx.delete(f"{service.url}/models/{code}/gestures/rock")
    assert r.status_code == 202, r.text
    again = httpx.delete(f"{service.url}/models/{code}/gestures/rock")  # a retry: no second retrain
    assert again.status_code == 202 and again.json()["task_id"] == r.json()["task_id"], again.text
    body, _ = poll_like_android(service.url, r.json()["task_id"])
    assert body["status"] == "SUCCESS", body
    after = httpx.delete(f"{service.url}/models/{code}/gestures/rock")  # ... nor once it is done
    assert after.status_code == 202 and after.json() == {**r.json(), "status": "SUCCESS"}, after.text
    deletions = [
        j for j in httpx.get(f"{service.url}/models/{code}/jobs", headers=OPERATOR).json() if j["action"] == "delete"
    ]
    assert len(deletions) == 1, deletions
    assert body["result"]["label_map"] == {"paper": 0, "scissors": 1, "call": 2}
    assert job_listed(service, code, r.json()["task_id"])["action"] == "delete"
    model = LiteModel.load(httpx.get(body["result"]["tflite_url"]).content)
    assert model.n_outputs == 3
    rng = np.random.default_rng(9)
    call = model.predict_proba(hands.generate_pose("call", 100, rng, handedness=1.0))
    assert float(np.mean(np.argmax(call, axis=1) == 2)) >= 0.8
    # A deletion that failed for good (its job stopped its worker three times) is not answered
    # forever: the next DELETE makes a new job.
    db_url = Settings(data_dir=service.data_dir).resolved_database_url
    job_records.set_job(db_url, r.json()["task_id"], status="FAILURE", error_info="x", error_detail={})
    fresh = httpx.delete(f"{service.url}/models/{code}/gestures/rock")
    assert fresh.status_code == 202 and fresh.json()["task_id"] != r.json()["task_id"], fresh.text
    assert poll_like_android(service.url, fresh.json()["task_id"])[0]["status"] == "SUCCESS"
    assert httpx.delete(f"{service.url}/models/{code}/gestures/rock").json()["task_id"] == fresh.json()["task_id"]


def test_add_frames_refines_a_gesture(service: Service) -> None:
    code = _child_with_call(service)
    before = {g["name"]: g["frames"] for g in httpx.get(f"{service.url}/models/{code}/gestures").json()}
    frames = hands.generate_recording("call", 40, np.random.default_rng(10), handedness=0.0).tolist()
    r = httpx.post(f"{service.url}/models/{code}/gestures/call/frames", json={"landmarks": frames})
    assert r.status_code == 202, r.text
    body, _ = poll_like_android(service.url, r.json()["task_id"])
    assert body["status"] == "SUCCESS", body
    new_code = body["result"]["model_code"]
    after = {g["name"]: g["frames"] for g in httpx.get(f"{service.url}/models/{new_code}/gestures").json()}
    assert after["call"] == before["call"] + 40 and body["result"]["label_map"]["call"] == 3
    versions = {m["model_code"] for m in httpx.get(f"{service.url}/models", headers=OPERATOR).json()["models"]}
    assert {code, new_code} <= versions
    again = httpx.post(f"{service.url}/models/{new_code}/gestures/call/frames", json={"landmarks": frames})
    assert again.status_code == 202, again.text
    resent, _ = poll_like_android(service.url, again.json()["task_id"])
    assert resent["status"] == "FAILURE" and "already holds all of these frames" in resent["error_info"], resent
    assert resent["result"] is None and job_listed(service, new_code, again.json()["task_id"])["child_code"] is None
    listed = job_listed(service, code, r.json()["task_id"])
    assert listed["action"] == "add_frames" and listed["gesture"] == "call" and listed["child_code"] == new_code
    assert datetime.fromisoformat(listed["created_at"]).utcoffset() == timedelta(0)  # UTC, and saying so
    created = datetime.fromisoformat(httpx.get(f"{service.url}/models/{new_code}").json()["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert {job["action"] for job in httpx.get(f"{service.url}/models/base_v1/jobs", headers=OPERATOR).json()} >= {
        "train"
    }


def test_frames_a_model_holds_are_not_added_twice(service: Service) -> None:
    """Re-sent frames (in another order, mixed with new ones) count once; frames stored under
    another gesture, or only frames the gesture holds, end the job FAILURE saying so."""
    code = _child_with_call(service)
    call = hands.generate_recording("call", 80, np.random.default_rng(8), handedness=1.0)  # as trained
    before = {g["name"]: g["frames"] for g in httpx.get(f"{service.url}/models/{code}/gestures").json()}
    fresh = hands.generate_recording("call", 30, np.random.default_rng(12), handedness=1.0)
    mixed = np.concatenate([call[20:50][::-1], fresh]).tolist()

    def add(gesture: str, frames: list) -> dict:
        r = httpx.post(f"{service.url}/models/{code}/gestures/{gesture}/frames", json={"landmarks": frames})
        assert r.status_code == 202, r.text
        return poll_like_android(service.url, r.json()["task_id"])[0]

    body = add("call", mixed)
    assert body["status"] == "SUCCESS", body
    after = {
        g["name"]: g["frames"]
        for g in httpx.get(f"{service.url}/models/{body['result']['model_code']}/gestures").json()
    }
    assert after["call"] == before["call"] + 30  # the 30 re-sent frames are not counted again
    body = add("call", call[::-1].tolist())
    assert body["status"] == "FAILURE" and "already holds all of these frames" in body["error_info"], body
    body = add("rock", call[:40].tolist())
    assert body["status"] == "FAILURE", body
    assert body["error_info"].startswith("40 of these frames are stored under the gesture 'call'"), body


def job_listed(service: Service, code: str, task_id: str) -> dict:
    """The job as `GET /models/{code}/jobs` lists it."""
    jobs = httpx.get(f"{service.url}/models/{code}/jobs", headers=OPERATOR).json()
    return next(job for job in jobs if job["task_id"] == task_id)


def test_chunked_oversized_body_is_refused(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"landmarks": ['
        for _ in range(300):
            yield b"0," * 5000

    r = httpx.post(
        f"{service.url}/models/base_v1/gestures/rock/frames",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_any_stored_name_can_be_managed_by_url(service: Service) -> None:
    """A name with "/" (percent-encoded in the URL) or sent in another Unicode normal form
    still reaches its gesture; validation errors are one string like every other error."""
    code = _child_with_call(service)
    r = httpx.post(f"{service.url}/models/{code}/gestures/call/rename", json={"new_name": "call/café"})
    assert r.status_code == 201, r.text
    renamed = r.json()["model_code"]
    decomposed = quote(unicodedata.normalize("NFD", "call/café"), safe="")
    # A direction mark (right-to-left keyboards add them) or a space around it, which the stored
    # name never has, does not hide the gesture either.
    marked = quote("\u200f call/café ", safe="")
    r = httpx.post(f"{service.url}/models/{renamed}/gestures/{marked}/rename", json={"new_name": "call"})
    assert r.status_code == 201, r.text
    assert r.json()["label_map"]["call"] == 3
    r = httpx.post(f"{service.url}/models/{renamed}/gestures/{decomposed}/rename", json={"name": "x"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "new_name: field required; unknown field 'name' (the fields are new_name)"
    r = httpx.post(f"{service.url}/models/{renamed}/gestures/{decomposed}/rename", json={"new_name": "x" * 65})
    assert r.status_code == 422 and r.json()["detail"] == "new_name: 65 characters, at most 64 allowed"
    r = httpx.post(f"{service.url}/models/{renamed}/gestures/{decomposed}/frames", content=b"{oops")
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
