"""How the API process serves connections: Uvicorn, with two guards against running out of
file descriptors (every connection holds one; so do the registry, the broker and, under
`ghostouch serve`, the supervisor's checks of the embedded broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# Above this the kernel's own ceiling (fs.nr_open) may refuse the soft limit.
MAX_OPEN_FILES = 1 << 20
# A request's line and headers together (nginx's default buffers allow 4 x 8 KiB).
MAX_REQUEST_HEAD_BYTES = 64 * 1024
# A connection that has sent nothing for this long, since it opened or since its last answer, is
# closed: longer than the apps' 5 s between polls, so a poll finds its connection still open.
KEEP_ALIVE_SECONDS = 10
# A request begun and then silent this long (its head or body unfinished) gets 408 and is closed:
# a phone that lost its signal mid-upload. Long enough for a poor mobile link's stalls (nginx
# waits 60 s between reads by default); a sender that trickles is the reverse proxy's to limit.
STALLED_REQUEST_SECONDS = 30.0


class _ParserKeepingItsReason:
    """httptools' request parser, keeping the reason of the error it raised ("Duplicate
    Content-Length"), which Uvicorn replaces by "Invalid HTTP request received"."""

    def __init__(self, parser: httptools.HttpRequestParser) -> None:
        self._parser = parser
        self.reason = ""

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reason = str(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class IdleClosingProtocol(HttpToolsProtocol):
    """Uvicorn's HTTP protocol, closing a connection on which nothing arrives within the
    keep-alive timeout (`KEEP_ALIVE_SECONDS`) from the moment it opens, and one whose request
    stops arriving halfway (`STALLED_REQUEST_SECONDS`). Uvicorn times connections out only between requests, so
    sockets opened and never used, or left with half a request, stayed open for good, and about
    a thousand of them used up the process's file descriptors (refused requests, and under
    `serve` a healthy broker taken for dead)."""

    stalled_after = STALLED_REQUEST_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.parser = _ParserKeepingItsReason(self.parser)  # type: ignore[assignment]
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self.head_bytes = 0  # of the request's line and headers: complete ones, as parsed
        self.unparsed_head = 0  # bytes received while the head is still incomplete
        self.in_head, self.refused = True, False
        self.receiving = False  # a request begun and not yet whole
        self.server_held = False  # the last stall period ended on the server's turn
        self.stall_timer: asyncio.TimerHandle | None = None

    # A request's line and headers are held in memory until they are complete, and neither
    # Uvicorn nor httptools bounds them: one connection sending headers without end grew the
    # process by a gigabyte. Past MAX_REQUEST_HEAD_BYTES the request gets 431, before any route
    # sees it, and the connection is closed. Counted twice over: the parsed line and headers
    # (a head that arrives whole in one read), and the bytes of reads that leave the head
    # unfinished (a header line without end, which httptools buffers until it ends).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes, self.unparsed_head = True, 0, 0
        self.receiving = True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_bytes += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._refuse_head()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        if not self.refused:
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if self.in_head and not self.refused and not self.transport.is_closing():
            self.unparsed_head += len(data)
            if self.unparsed_head > MAX_REQUEST_HEAD_BYTES:
                self._refuse_head()
        self.server_held = False
        self._watch_for_stall()

    def _watch_for_stall(self) -> None:
        """(Re)start the stall timer while a request is unfinished; stop it once it is whole."""
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        if self.receiving and not self.refused and not self.transport.is_closing():
            self.stall_timer = self.loop.call_later(self.stalled_after, self._stalled)

    def _servers_turn(self) -> bool:
        """Whether the silence is the server's doing: it stopped reading (a body the route has yet
        to take), the client waits for its "100 Continue", or this is a pipelined request behind
        one still being answered."""
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            return True
        return cycle is not None and not cycle.more_body and not cycle.response_complete

    def _stalled(self) -> None:
        self.stall_timer = None
        if not self.receiving or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body:
            # Answered before its body ended (413 for a body declared too large): nothing more to
            # say on it, and no second answer to send.
            log.warning("closed a connection whose answered request stopped arriving: %s", self._peer())
            self.transport.close()
            return
        servers_turn = self._servers_turn()
        if servers_turn or self.server_held:
            # The client gets a whole period of its own from when the server's turn ended.
            self.server_held = servers_turn
            self._watch_for_stall()
            return
        self._close_with(408, "Request Timeout", f"the request stopped arriving for {self.stalled_after:g} s")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request HTTP itself cannot parse (two Content-Length headers, a bad chunk size): the
        API's JSON error body, where Uvicorn answers in plain text."""
        reason = getattr(self.parser, "reason", "") or msg.rstrip(".").lower()
        self._close_with(400, "Bad Request", f"malformed HTTP request: {reason}")

    def _refuse_head(self) -> None:
        self._close_with(431, "Request Header Fields Too Large", "request line and headers over 64 KiB")

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _close_with(self, status: int, reason: str, detail: str) -> None:
        """Answer `status` with the API's JSON error body, before any route sees the request, and
        close the connection (in the log too: no access-log line is written for it). Whatever
        else arrives on it is ignored."""
        self.refused = True
        log.warning("%s %s to %s, connection closed: %s", status, reason, self._peer(), detail)
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n".encode()
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()


def raise_open_file_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit (children inherit it);
    returns the limit in force. Many systems start processes with 1024, which a few hundred
    slow phones and the service's own connections can exhaust."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    log.warning("could not raise the open-file limit from %d to %d", soft, wanted)
    return soft
