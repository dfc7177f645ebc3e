"""The legacy API over real HTTP against real `ghostouch api` + `ghostouch worker` processes."""

from __future__ import annotations

import json
import socket
import time

import httpx
import numpy as np
import pytest

from ghostouch.api.training import clean_gesture_name
from ghostouch.config import MAX_BODY_BYTES, MAX_FRAMES, MIN_FRAMES
from ghostouch.engine import hands
from ghostouch.names import lookalike_in
from tests.conftest import OPERATOR, Service


def frames(n: int = 60, pose: str = "one", seed: int = 0) -> list[list[float]]:
    return hands.generate_recording(pose, n, np.random.default_rng(seed), handedness=1.0).tolist()


def post(service: Service, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{service.url}/train", json=body, timeout=30, **kw)  # type: ignore[arg-type]


def test_health_ready_and_docs(service: Service) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["ready"] is True and ready["checks"]["workers"] >= ready["checks"]["warm_workers"] >= 1
    assert httpx.get(f"{service.url}/docs").status_code == 200
    spec = httpx.get(f"{service.url}/openapi.json").json()
    assert {"/train", "/status/{task_id}", "/models/{code}/labels"} <= set(spec["paths"])
    train = spec["paths"]["/train"]["post"]
    assert {"404", "413", "422", "503"} <= set(train["responses"])
    schema = train["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert schema["landmarks"]["minItems"] == MIN_FRAMES and schema["gesture"]["minLength"] == 1
    assert "404" in spec["paths"]["/models/{code}"]["get"]["responses"]
    for download in ("/dl/{expires}/{sig}/{key}", "/files/{key}"):
        assert {"200", "206", "304", "403", "404"} <= set(spec["paths"][download]["get"]["responses"]), download
    assert schema["gesture"]["maxLength"] == 64
    # Every error, 422 included, is documented as it is sent: {"detail": "..."}.
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and path != "/readyz":  # that 503 is a readiness report
                    assert response["content"]["application/json"]["schema"] == error_ref, (path, method, code)
    gestures = "/models/{code}/gestures/{name}"
    for path, method in ((gestures, "delete"), (f"{gestures}/frames", "post")):
        accepted = spec["paths"][path][method]["responses"]["202"]["content"]["application/json"]["schema"]
        assert accepted == {"$ref": "#/components/schemas/TrainAccepted"}


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda f: f.__setitem__(3, f[3][:63]), "frame 3: expected 64 numbers"),
        (lambda f: f[5].__setitem__(10, 0.9), "frame 5, value 10"),
        (lambda f: f[2].__setitem__(63, 0.3), "frame 2, value 63 (handedness)"),
        (lambda f: f[4].__setitem__(0, "a"), "frame 4, value 0: not a number"),
    ],
)
def test_bad_frames_get_422_naming_the_frame(service: Service, mutate: object, fragment: str) -> None:
    body = frames()
    mutate(body)  # type: ignore[operator]
    r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": body})
    assert r.status_code == 422 and fragment in r.json()["detail"]


def test_frames_in_another_value_order_get_422_saying_which(service: Service) -> None:
    grouped = np.asarray(frames(), dtype=np.float32)
    grouped[:, :63] = grouped[:, :63].reshape(-1, 21, 3).transpose(0, 2, 1).reshape(-1, 63)
    r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": grouped.tolist()})
    assert r.status_code == 422 and "coordinate-major" in r.json()["detail"], r.text
    flat = [value for frame in frames() for value in frame]
    r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": flat})
    assert r.status_code == 422 and "a flat list of 3840 numbers" in r.json()["detail"], r.text


def test_non_finite_numbers_are_refused(service: Service) -> None:
    body = frames()
    text = json.dumps({"model_code": "base_v1", "gesture": "g", "landmarks": body})
    text = text.replace(str(body[1][7]), "NaN", 1)
    r = httpx.post(f"{service.url}/train", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "frame 1, value 7: not a finite number" in r.json()["detail"]


def test_frame_count_limits(service: Service) -> None:
    for n in (MIN_FRAMES - 1, MAX_FRAMES + 1):
        r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": frames(n)})
        assert r.status_code == 422 and f"got {n} frames" in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("   ", "empty"),
        ("x" * 65, "at most 64"),
        ("a\u0007b", "control character"),
        ("a\ud800", "surrogate"),
        ("\u200b\u202e", "no visible character"),
        ("rock\u200b", "invisible format character U+200B"),
        ("\ufeffrock", "invisible format character U+FEFF"),
        ("ro\u00adck", "invisible format character U+00AD"),
        ("\u202erock", "invisible format character U+202E"),
        ("rock\u200d", "joiner"),
        ("..", "cannot be used in the model's URLs"),
        ("\U000e0041rock", "invisible format character U+E0041"),
        ("rock\U000e0020", "invisible format character U+E0020"),
        ("\u3164", "no visible character"),  # Hangul filler
        ("\u2800 \uffa0", "no visible character"),  # blank Braille pattern, halfwidth filler
        ("rock\u3164", "U+3164 shows as blank space"),
    ],
)
def test_bad_gesture_names(service: Service, name: str, fragment: str) -> None:
    text = json.dumps({"model_code": "base_v1", "gesture": name, "landmarks": frames()})  # \ud800 escaped
    r = httpx.post(f"{service.url}/train", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422 and fragment in r.json()["detail"]


@pytest.mark.parametrize(
    "name",
    [
        "전화",
        "👍🏽",
        "👨\u200d👩\u200d👧",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        "ok...",
    ],
)
def test_names_that_need_invisible_characters_are_kept(name: str) -> None:
    """Zero-width joiners inside emoji sequences and the tag characters of subdivision flags
    are part of what the user typed; only stray format characters are refused."""
    assert clean_gesture_name(f"  {name} ") == name
    assert clean_gesture_name("\u200fשלום\u200e") == "שלום"  # direction marks show nothing: removed


@pytest.mark.parametrize(
    ("name", "existing"),
    [
        ("paper\ufe0f", "paper"),  # a variation selector after a letter
        ("paper\u034f", "paper"),  # the combining grapheme joiner
        ("pa\u200cper", "paper"),  # a zero-width non-joiner between Latin letters
        ("pa\u200c\u200cper", "paper"),  # two of them
        ("pa\u200dper", "paper"),  # a zero-width joiner there
        ("paper \ufe0f", "paper"),  # a space hidden before a selector
        ("\u270c", "\u270c\ufe0f"),  # an emoji without and with its emoji-style selector (iOS adds it)
        ("\uff50\uff41\uff50\uff45\uff52", "paper"),  # full-width letters
        ("\uff8a\uff9f", "\u30d1"),  # half-width katakana
    ],
)
def test_names_that_look_the_same_are_one_name(name: str, existing: str) -> None:
    assert lookalike_in(name, ["rock", existing]) == existing
    assert lookalike_in(existing, ["rock", name]) == name


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("Paper", "paper"),
        ("👨\u200d👩\u200d👧", "👨👩👧"),
        ("전화", "전하"),
        ("\u314e\u314f", "\ud558"),  # separate jamo beside the syllable they make
        ("\u2139\ufe0f", "i"),  # compatibility forms other than width ones look different
        ("\u2460", "1"),
        ("1\ufe0f\u20e3", "1"),  # a keycap
        ("\u0915\u094d\u200c\u0937", "\u0915\u094d\u0937"),  # the non-joiner shows in Devanagari
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u062e\u0648\u0627\u0647\u0645",
        ),  # and in Persian
    ],
)
def test_names_that_differ_visibly_stay_apart(name: str, other: str) -> None:
    assert lookalike_in(name, [other]) is None


@pytest.mark.parametrize("code", ["nope", "../../etc/passwd", "base_v1/../x", "a" * 300])
def test_unknown_or_path_like_model_codes_are_404(service: Service, code: str) -> None:
    r = post(service, {"model_code": code, "gesture": "g", "landmarks": frames()})
    assert r.status_code == 404 and "model_code" in r.json()["detail"]


def test_malformed_bodies(service: Service) -> None:
    r = httpx.post(f"{service.url}/train", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = post(service, {"gesture": "g", "landmarks": frames()})
    assert r.status_code == 422 and "model_code" in r.json()["detail"]


def test_bodies_a_client_library_gets_wrong_are_named(service: Service) -> None:
    """A camelCase option, a compressed body, Latin-1 text and a JSON array each get an answer a
    client developer can act on (an unknown field used to be ignored: `allowDuplicate` then ended
    the job DUPLICATE, and a gzip body got Python's codec error)."""
    import gzip

    body = {"model_code": "base_v1", "gesture": "g", "landmarks": frames(), "allowDuplicate": True}
    r = post(service, body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "body must be {model_code, gesture, landmarks}: unknown field 'allowDuplicate' "
        "(the fields are model_code, gesture, landmarks, allow_duplicate)"
    )
    r = httpx.post(f"{service.url}/models/base_v1/gestures/rock/rename", json={"new_name": "fist", "name": "x"})
    assert r.status_code == 422 and "unknown field 'name' (the fields are new_name)" in r.json()["detail"], r.text
    body["allow_duplicate"] = body.pop("allowDuplicate")
    plain = json.dumps(body).encode()
    r = httpx.post(f"{service.url}/train", content=gzip.compress(plain), headers={"content-encoding": "gzip"})
    assert r.status_code == 415, r.text
    assert r.json()["detail"] == "Content-Encoding 'gzip' is not supported; send the JSON uncompressed"
    r = httpx.post(f"{service.url}/train", content=plain.replace(b'"g"', b'"h"'), headers={"content-encoding": "UTF-8"})
    assert r.status_code == 202, r.text  # a charset where the coding goes, which some clients send: read as before
    latin = json.dumps({**body, "gesture": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    r = httpx.post(f"{service.url}/train", content=latin, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "body is not UTF-8 text (byte 0xe9 at position" in r.json()["detail"], r.text
    r = post(service, [body])
    assert r.status_code == 422, r.text
    assert (
        r.json()["detail"]
        == "body must be {model_code, gesture, landmarks}: the body must be a JSON object, not an array"
    )


def test_bodies_that_used_to_raise_get_422(service: Service) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = httpx.post(f"{service.url}/train", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]
    body = frames()
    text = json.dumps({"model_code": "base_v1", "gesture": "g", "landmarks": body})
    text = text.replace(str(body[3][5]), "9" * 401, 1)
    r = httpx.post(f"{service.url}/train", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "frame 3, value 5: not a finite number" in r.json()["detail"]
    text = json.dumps({"model_code": "base_v1", "gesture": "g", "landmarks": body}).replace(
        str(body[3][6]), "9" * 5000, 1
    )
    for route in ("/train", "/models/base_v1/gestures/rock/frames"):
        r = httpx.post(f"{service.url}{route}", content=text, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "thousands of digits" in r.json()["detail"], (route, r.text)
    r = httpx.post(f"{service.url}/models/base_v1/gestures/rock/rename", content=deep)
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]
    collapsed = [[0.0] * 63 + [1.0]] * 30
    r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": collapsed})
    assert r.status_code == 422 and "only 0 of 30 frames show a hand" in r.json()["detail"]
    noise = np.random.default_rng(5).uniform(-0.1, 0.1, (100, 64))
    noise[:, 63] = 1.0
    r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": noise.tolist()})
    assert r.status_code == 422 and "do not look like a hand's landmarks" in r.json()["detail"], r.text


def test_oversized_body_is_refused_early(service: Service) -> None:
    big = b'{"model_code": "base_v1", "gesture": "g", "landmarks": [' + b"0," * MAX_BODY_BYTES + b"0]}"
    r = httpx.post(f"{service.url}/train", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_task_is_404(service: Service) -> None:
    assert httpx.get(f"{service.url}/status/does-not-exist").status_code == 404


def test_download_links_are_signed(service: Service) -> None:
    labels = httpx.get(f"{service.url}/models/base_v1").json()
    url = labels["tflite_url"]
    assert url.rsplit("/", 1)[1] == "base_v1.tflite" and "?" not in url  # Android's saved file name
    base, expires, sig, key = url.split("/dl/")[0], *url.split("/dl/")[1].split("/", 2)
    assert httpx.get(url).status_code == 200
    assert httpx.head(url).status_code == 200
    assert httpx.get(f"{base}/dl/{expires}/0{sig}/{key}").status_code == 403
    assert httpx.get(f"{base}/dl/1{expires}/{sig}/{key}").status_code == 403
    assert httpx.get(f"{base}/files/{key}").status_code == 403  # unsigned
    assert httpx.get(f"{base}/files/{key}?expires={expires}&sig={sig}").status_code == 200  # earlier links


def test_downloads_follow_http_range_and_cache_rules(service: Service) -> None:
    """Download managers resume with Range and revalidate with If-None-Match (RFC 9110)."""
    url = httpx.get(f"{service.url}/models/base_v1").json()["tflite_url"]
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    part = httpx.get(url, headers={"Range": "bytes=8-15"})
    assert part.status_code == 206 and part.content == whole.content[8:16]
    tail = httpx.get(url, headers={"Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == whole.content[-4:]
    # A Range the server does not understand is ignored: the whole file.
    for odd in ("items=0-5", "bytes=abc", "bytes=10-5"):
        answer = httpx.get(url, headers={"Range": odd})
        assert answer.status_code == 200 and answer.content == whole.content, odd
    beyond = httpx.get(url, headers={"Range": f"bytes={len(whole.content) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(whole.content)}"
    etag = whole.headers["etag"]
    for tags in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = httpx.get(url, headers={"If-None-Match": tags})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag, tags
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).content == whole.content


def test_listings_across_users_need_the_operators_token(service: Service) -> None:
    """The apps send no identity: whoever lists models or base_v1's jobs would see every user's."""
    for path in ("/models", "/models/base_v1/jobs"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": OPERATOR["Authorization"][7:]}):
            refused = httpx.get(f"{service.url}{path}", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", (path, headers)
            assert "GHOSTOUCH_OPERATOR_TOKEN" in refused.json()["detail"]
        assert httpx.get(f"{service.url}{path}", headers=OPERATOR).status_code == 200
    # what an app holds (a model code, a task id) needs no token
    assert httpx.get(f"{service.url}/models/base_v1").status_code == 200


def test_base_v1_label_map(service: Service) -> None:
    assert httpx.get(f"{service.url}/models/base_v1/labels").json() == {"paper": 0, "rock": 1, "scissors": 2}


def test_a_wrong_method_names_the_right_one(service: Service) -> None:
    r = httpx.get(f"{service.url}/models/base_v1/gestures/paper/frames")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_every_get_route_answers_head(service: Service) -> None:
    for path in ("/healthz", "/readyz", "/models/base_v1", "/models/base_v1/labels", "/models/nope"):
        get = httpx.get(f"{service.url}{path}")
        # Read off the socket: an HTTP client never reads a body after HEAD, so only the raw
        # bytes show that none was sent.
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(f"HTTP/1.1 {get.status_code} ".encode()) and body == b"", (path, raw[:200])
        assert f"content-length: {len(get.content)}".encode() in head.lower(), path
    r = httpx.options(f"{service.url}/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_errors_quote_what_was_sent_briefly(service: Service) -> None:
    body = frames()
    body[3][5] = "a" * 100_000  # type: ignore[call-overload]
    r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": body})
    assert r.status_code == 422 and "frame 3, value 5: not a number ('aaaa" in r.json()["detail"]
    assert len(r.content) < 300 and "100002 characters" in r.json()["detail"]
    r = post(service, {"model_code": "x" * 10_000, "gesture": "g", "landmarks": frames()})
    assert r.status_code == 404 and len(r.content) < 300


def test_options_take_json_values_only(service: Service) -> None:
    for flag in ("yes", 1):
        r = post(service, {"model_code": "base_v1", "gesture": "g", "landmarks": frames(), "allow_duplicate": flag})
        assert r.status_code == 422 and "allow_duplicate" in r.json()["detail"]


def test_an_empty_idempotency_key_is_refused(service: Service) -> None:
    body = {"model_code": "base_v1", "gesture": "g", "landmarks": frames()}
    r = httpx.post(f"{service.url}/train", json=body, headers={"Idempotency-Key": ""})
    assert r.status_code == 422 and "idempotency-key" in r.json()["detail"].lower()


def test_a_client_that_hangs_up_mid_body_leaves_no_error_in_the_log(service: Service) -> None:
    log = service.data_dir / "api.log"
    before = log.stat().st_size
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(b"POST /train HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: 1000\r\n\r\n" + b'{"model_code": ')
    time.sleep(1.0)
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    with log.open("rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written and "ClientDisconnect" not in written, written


def test_a_readiness_check_stuck_on_a_frozen_dependency_neither_stalls_the_probe_nor_the_exit() -> None:
    """The check runs in a daemon thread: the probe answers after its wait, a second probe awaits
    the same check instead of starting another, and the process can still exit."""
    import subprocess
    import sys

    script = """
import threading, time
from ghostouch.api import health
started = []
def frozen(state):
    started.append(1)
    threading.Event().wait()  # a call that never returns
health.CHECKS = {"database": (frozen, ("database",))}
state = object()
t = time.monotonic()
print(health._checks(state)["database"], round(time.monotonic() - t))
print(health._checks(state)["database"], len(started))
"""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["no answer within 3 s 3", "no answer within 3 s 1"], done.stdout
    assert time.monotonic() - started < 20
