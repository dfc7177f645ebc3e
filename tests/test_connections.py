"""The API's connection guard (`api/server.IdleClosingProtocol`) on a real Uvicorn server on
127.0.0.1, with a short stall limit so the suite does not wait the production 30 s."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ghostouch.api.server import IdleClosingProtocol
from tests.conftest import free_port

STALL = 1.0


class QuickStallProtocol(IdleClosingProtocol):
    stalled_after = STALL


async def echo_size(request: Request) -> JSONResponse:
    if request.query_params.get("wait"):  # a route slow to take its body: Uvicorn stops reading
        await asyncio.sleep(float(request.query_params["wait"]))
    return JSONResponse({"size": len(await request.body())})


async def refuse_early(request: Request) -> JSONResponse:
    """Answers before reading the body, as the API's body-size limit does for a declared 3 MB."""
    return JSONResponse({"detail": "the body is larger than 2 MiB"}, status_code=413)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = Starlette(
        routes=[Route("/echo", echo_size, methods=["POST"]), Route("/early", refuse_early, methods=["POST"])]
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), http=QuickStallProtocol, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield config.port
    server.should_exit = True
    thread.join(timeout=10)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "sent",
    [
        b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"model_code":',  # body cut off
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le",  # headers cut off
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123",  # a chunk cut off
    ],
    ids=["body", "headers", "chunked"],
)
def test_a_request_that_stops_arriving_gets_408_and_is_closed(
    port: int, sent: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A phone that lost its signal mid-upload left its connection open for good (the idle
    timer stopped at the first byte); now it is answered and closed once nothing arrives, and
    the log says so."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        answer = read_all(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'{"detail": "the request stopped arriving for 1 s"}' in answer
    assert STALL * 0.9 <= waited < STALL + 5
    assert any(
        r.levelname == "WARNING" and "408 Request Timeout to 127.0.0.1:" in r.getMessage() for r in caplog.records
    ), caplog.text


def test_a_slow_but_steady_sender_and_a_slow_route_are_served(port: int) -> None:
    """The limit is on silence, not on the request's length: a body sent in pieces 0.6 s apart
    (over 2 s in all) is served, and so is one the route takes only after 2.5 s, while Uvicorn
    has stopped reading it (its buffer is full), with nothing to read meanwhile."""
    body = b"x" * 300_000
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\n")
        for piece in (b"a", b"b", b"c", b"d"):
            time.sleep(0.6)
            sock.sendall(piece)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"size":4}'), answer[:200]
    head = b"POST /echo?wait=2.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"size":300000}'), answer[:200]


def test_a_request_http_cannot_parse_gets_a_json_400(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in answer, answer[:300]
    assert answer.endswith(b'{"detail": "malformed HTTP request: Duplicate Content-Length"}'), answer[-200:]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        answer = read_all(sock)
    assert answer.endswith(b'{"detail": "malformed HTTP request: Invalid character in chunk size"}'), answer[-200:]


def test_silence_while_the_server_has_the_turn_is_not_a_stall(port: int) -> None:
    """A pipelined request's unfinished head behind a slow one, and a client waiting for its
    "100 Continue", are the server's to move: neither gets 408 for that wait (both did, when the
    route took longer than the limit); the pipelined request, left unfinished, does once the
    answer before it has gone out."""
    slow = b"POST /echo?wait=2.5 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(slow + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le")
        answer = read_all(sock)
    first, _, rest = answer.partition(b'{"size":2}')
    assert first.startswith(b"HTTP/1.1 200"), answer[:300]
    assert rest.startswith(b"HTTP/1.1 408"), answer[:300]
    head = (
        b"POST /echo?wait=2.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"abc")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"size":3}'), answer[:300]


def test_a_request_answered_before_its_body_ended_gets_no_second_answer(port: int) -> None:
    """413 for a body declared too large, then the client goes quiet: the connection is closed
    at the stall limit with nothing more sent (a 408 used to follow the 413 on it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 200_000)
        started = time.monotonic()
        answer = read_all(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413") and answer.count(b"HTTP/1.1") == 1, answer[:400]
    assert STALL * 0.9 <= waited < STALL + 5
