"""How the API process serves connections: Uvicorn, with two guards against running out of
file descriptors (every connection holds one; so do the registry, the broker and, under
`ghostouch serve`, the supervisor's checks of the embedded broker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# Above this the kernel's own ceiling (fs.nr_open) may refuse the soft limit.
MAX_OPEN_FILES = 1 << 20


class IdleClosingProtocol(HttpToolsProtocol):
    """Uvicorn's HTTP protocol, closing a connection on which nothing arrives within the
    keep-alive timeout (5 s) from the moment it opens. Uvicorn times connections out only
    between requests, so sockets opened and never used stayed open for good, and about a
    thousand of them used up the process's file descriptors (refused requests, and under `serve`
    a healthy broker taken for dead)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


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
