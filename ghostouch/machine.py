"""Naming processes across machines and containers: who runs a job, who owns a broker."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def machine_id() -> str:
    """This machine as process ids see it: host name, boot and PID namespace. The boot id tells
    apart machines that share a host name (every host's initial PID namespace has the same
    number); the namespace tells apart containers on one host (they share its boot id)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "-"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def same_machine(recorded: str) -> bool:
    """Whether a `machine_id` recorded earlier (in a job claim, a broker's owner file) is this
    machine's, also one written before the boot id was part of it ("host/namespace")."""
    current = machine_id()
    if recorded == current:
        return True
    host, _, namespace = current.split("/")
    return recorded.split("/") == [host, namespace]


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
