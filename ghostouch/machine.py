"""Naming processes across machines and containers: who runs a job, who owns a broker."""

from __future__ import annotations

import os
import socket


def machine_id() -> str:
    """This machine as process ids see it: host name and PID namespace (containers that share a
    host name, as with host networking, have PID namespaces of their own)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def process_running(pid: int) -> bool:
    """Whether process `pid` of this machine exists (a zombie counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
