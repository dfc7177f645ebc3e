"""The app flow with models stored and delivered through Firebase Storage (a real GCS emulator)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from ghostouch.engine import hands
from ghostouch.engine.verify import LiteModel
from tests.conftest import (
    OPERATOR,
    Service,
    free_port,
    get_ok,
    poll_like_android,
    service_env,
    spare_redis_url,
    start_serve,
    wait_until,
)
from tests.gcs_fixtures import Emulator, FirebaseStoreFactory, Gateway, ServiceAccount


def firebase_env(
    env: dict[str, str], emulator: Emulator, account: ServiceAccount, storage_url: str | None = None
) -> dict[str, str]:
    """`env` set up for the emulator's bucket, reached at `storage_url` (default: directly)."""
    return {
        **env,
        "GHOSTOUCH_STORAGE": "firebase",
        "FIREBASE_CREDENTIALS": str(account.path),
        "FIREBASE_STORAGE_BUCKET": emulator.bucket,
        "GHOSTOUCH_FIREBASE_PROJECT_ID": emulator.project,
        "STORAGE_EMULATOR_HOST": storage_url or emulator.url,
    }


def test_serve_with_firebase_storage(tmp_path: Path, gcs_emulator: Emulator, service_account: ServiceAccount) -> None:
    """The whole flow through the bucket; then the bucket goes away: finished jobs still answer,
    and new requests get a JSON 503 in seconds, not a bare 500 after minutes."""
    gateway = Gateway(gcs_emulator.url.removeprefix("http://"))
    port = free_port()
    env = firebase_env(service_env(tmp_path / "data", None, port), gcs_emulator, service_account, gateway.url)
    proc = start_serve(env, port, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get_ok(f"{url}/readyz"), 180, "serve with Firebase storage never became ready")
        rng = np.random.default_rng(21)
        frames = hands.generate_recording("three", 100, rng, handedness=1.0).tolist()
        r = httpx.post(
            f"{url}/train",
            json={"model_code": "base_v1", "gesture": "three", "landmarks": frames, "allow_duplicate": True},
        )
        body, _ = poll_like_android(url, r.json()["task_id"])
        assert body["status"] == "SUCCESS", body
        tflite_url = body["result"]["tflite_url"]
        parsed = urlparse(tflite_url)
        # a signed link the API answers: the whole last segment is the file name Android saves
        assert tflite_url.startswith(f"{url}/dl/") and not parsed.query
        assert tflite_url.rsplit("/", 1)[1] == f"{body['result']['model_code']}.tflite"
        download = httpx.get(tflite_url)
        model = LiteModel.load(download.content)
        assert model.n_outputs == 4
        # relayed from the bucket: revalidated without sending it again
        cached = httpx.get(tflite_url, headers={"If-None-Match": download.headers["etag"]})
        assert cached.status_code == 304 and cached.content == b"", cached
        # and resumed by a download manager: one byte range, or the whole file past a changed If-Range
        whole, etag = download.content, download.headers["etag"]
        part = httpx.get(tflite_url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole[100:200], part
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
        tail = httpx.get(tflite_url, headers={"Range": "bytes=-10", "If-Range": etag})
        assert tail.status_code == 206 and tail.content == whole[-10:]
        stale = httpx.get(tflite_url, headers={"Range": "bytes=0-9", "If-Range": '"older"'})
        assert stale.status_code == 200 and stale.content == whole
        beyond = httpx.get(tflite_url, headers={"Range": f"bytes={len(whole)}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(whole)}"
        probs = model.predict_proba(hands.generate_pose("three", 100, rng, handedness=1.0))
        assert float(np.mean(np.argmax(probs, axis=1) == 3)) >= 0.8
        # nothing but the registry and scratch on local disk: models and samples live in the bucket
        assert not (tmp_path / "data" / "objects").exists()
        listing = httpx.get(f"{gcs_emulator.url}/storage/v1/b/{gcs_emulator.bucket}/o").json()
        names = [item["name"] for item in listing.get("items", [])]
        assert any(n.endswith(".tflite") for n in names) and any(n.startswith("samples/") for n in names)

        gateway.hang()  # the bucket takes requests and never answers
        for _ in range(2):  # the second probe awaits the first one's storage check, not a new one
            started = time.monotonic()
            ready = httpx.get(f"{url}/readyz", timeout=60)
            assert ready.status_code == 503 and ready.json()["checks"]["storage"] == "no answer within 3 s"
            assert ready.json()["checks"]["database"] == "ok" and time.monotonic() - started < 8
        started = time.monotonic()  # an app's request waits no longer than its HTTP client would
        fresh = hands.generate_recording("pinch", 100, rng, handedness=1.0).tolist()  # not stored yet
        busy = httpx.post(
            f"{url}/train", json={"model_code": "base_v1", "gesture": "pinch", "landmarks": fresh}, timeout=60
        )
        assert busy.status_code == 503 and busy.json()["detail"] == "the model storage is unavailable; please retry"
        waited = time.monotonic() - started
        print(f"POST /train against a hanging bucket: 503 after {waited:.1f} s")
        assert waited < 10
        gateway.hang(False)
        gateway.cut()
        status = httpx.get(f"{url}/status/{r.json()['task_id']}", timeout=60)
        assert status.status_code == 200 and status.json()["result"]["tflite_url"]  # signing needs no bucket
        download = httpx.get(tflite_url, timeout=120)
        assert download.status_code == 503, download.text
        assert download.json() == {"detail": "the model storage is unavailable; please retry"}
        held = httpx.get(tflite_url, headers={"If-None-Match": etag}, timeout=10)  # no bucket needed
        assert held.status_code == 304 and held.headers["etag"] == etag, held
        started = time.monotonic()
        again = hands.generate_recording("four", 100, rng, handedness=1.0).tolist()
        refused = httpx.post(
            f"{url}/train", json={"model_code": "base_v1", "gesture": "four", "landmarks": again}, timeout=120
        )
        assert refused.status_code == 503, refused.text
        assert refused.json() == {"detail": "the model storage is unavailable; please retry"}
        assert time.monotonic() - started < 10  # the API's retry deadline (4 s) plus one request's timeout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_public_links_are_answered_without_the_bucket(
    firebase_store_factory: FirebaseStoreFactory, gcs_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GHOSTOUCH_PUBLIC_LINKS, objects are made public when stored, and a link is only a
    string: an app polling /status every second costs no ACL write, and gets its link while the
    bucket is unreachable."""
    gateway = Gateway(gcs_emulator.url.removeprefix("http://"))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gateway.url)
    store = firebase_store_factory(public_links=True)
    key = f"t-{time.monotonic_ns()}/m.tflite"
    store.put_bytes(key, b"model bytes", "application/octet-stream")
    link = store.download_url(key)
    assert httpx.get(link).content == b"model bytes"  # public: no signature needed
    gateway.cut()
    started = time.monotonic()
    assert store.download_url(key) == link
    assert time.monotonic() - started < 1.0


def test_a_job_stuck_on_a_storage_that_stopped_answering_ends_at_its_time_limit(
    tmp_path: Path, redis_url: str, gcs_emulator: Emulator, service_account: ServiceAccount
) -> None:
    """The worker's bucket takes requests and never answers: the job ends FAILURE at its time
    limit, saying so, with nothing published; once the bucket answers again, the app's retry of
    the same request (same Idempotency-Key) runs that job again, on the same worker."""
    gateway = Gateway(gcs_emulator.url.removeprefix("http://"))
    port = free_port()
    env = firebase_env(service_env(tmp_path / "data", spare_redis_url(redis_url), port), gcs_emulator, service_account)
    env["GHOSTOUCH_JOB_TIME_LIMIT_SECONDS"] = "4"
    (tmp_path / "data").mkdir()
    api = Service(tmp_path / "data", env, port, logs=tmp_path)
    worker = Service(tmp_path / "data", {**env, "STORAGE_EMULATOR_HOST": gateway.url}, port, logs=tmp_path)
    worker.start_worker()
    api.start_api()
    rng = np.random.default_rng(4)
    try:
        api.wait_ready(180)
        gateway.hang()
        frames = hands.generate_recording("three", 100, rng, handedness=1.0).tolist()
        request = {"model_code": "base_v1", "gesture": "three", "landmarks": frames}
        retry_key = {"Idempotency-Key": "three-1"}
        sent = httpx.post(f"{api.url}/train", json=request, headers=retry_key)
        started = time.monotonic()
        body, _ = poll_like_android(api.url, sent.json()["task_id"], timeout=60)
        took = time.monotonic() - started
        assert body["status"] == "FAILURE", body
        assert body["error_info"].startswith("the job did not finish within its time limit (4 s, at: "), body
        assert body["error_detail"] == {"retryable": True}
        assert took < 20, took  # a request to the bucket gives up after 20 s: the limit stopped it
        assert httpx.get(f"{api.url}/models", headers=OPERATOR).json()["models"] == []  # nothing published
        gateway.hang(False)
        again = httpx.post(f"{api.url}/train", json=request, headers=retry_key)
        assert again.status_code == 202 and again.json()["task_id"] == sent.json()["task_id"], again.text
        assert again.json()["status"] == "PENDING"
        body, _ = poll_like_android(api.url, again.json()["task_id"], timeout=90)
        assert body["status"] == "SUCCESS" and body["error_detail"] is None, body
    finally:
        worker.stop_all()
        api.stop_all()
        gateway.cut()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FIREBASE_STORAGE_BUCKET", "no-such-bucket", "Firebase bucket 'no-such-bucket' is not usable"),
        ("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}", "is not usable"),
    ],
)
def test_a_worker_whose_bucket_cannot_be_used_does_not_start(
    tmp_path: Path,
    redis_url: str,
    gcs_emulator: Emulator,
    service_account: ServiceAccount,
    variable: str,
    value: str,
    message: str,
) -> None:
    """Else it would report ready, take users' jobs and fail each of them."""
    env = service_env(tmp_path / "data", spare_redis_url(redis_url), free_port())
    env = {**firebase_env(env, gcs_emulator, service_account), variable: value}
    (tmp_path / "data").mkdir()
    started = time.monotonic()
    done = Service(tmp_path / "data", env, 0).cli("worker", "--no-ensure-base", timeout=120)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ghostouch worker: GHOSTOUCH_STORAGE=firebase: ") and message in last, done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
