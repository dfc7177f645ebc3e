"""Naming processes across machines and containers: who runs a job, who owns a broker."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def machine_id() -> str:
    """This machine as process ids see it: host name and PID namespace (containers that share a
    host name, as with host networking, have PID namespaces of their own)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def process_running(pid: int) -> bool:
    """Whether process `pid` of this machine runs: it exists and is not a zombie (a process that
    has exited but was not reaped yet, as a SIGKILLed `serve` is for a moment)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to ask: it exists
    return stat.rpartition(")")[2].split()[0] != "Z"
