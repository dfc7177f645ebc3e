"""What `ghostouch serve` runs beside the API, kept running: the embedded broker and the workers.

A worker or broker that exits while the service is up is started again (after a short pause if it
keeps dying), so one machine needs no outside supervisor. The embedded broker keeps nothing on
disk, so whenever it (re)starts, every job still PENDING is queued again, and jobs whose worker
died go back to the queue (`jobs.recovery`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from ghostouch.config import Settings
from ghostouch.embedded_broker import EmbeddedBroker

log = logging.getLogger("ghostouch")

CHECK_SECONDS = 2.0
RESTART_PAUSE_SECONDS = 10.0  # before a restart of something that died within a minute of starting


def python_cli(*args: str) -> list[str]:
    """The command line of `ghostouch ARGS` run by this Python."""
    return [sys.executable, "-m", "ghostouch.cli", *args]


class ServeProcesses:
    def __init__(self, settings: Settings, n_workers: int, before_workers: Callable[[], None]) -> None:
        self.settings = settings
        self.n_workers = n_workers
        self.before_workers = before_workers  # e.g. provision base_v1
        self.broker = None if settings.broker_url else EmbeddedBroker(settings.embedded_broker_socket)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.started_at: list[float] = []
        self.broker_started_at = 0.0
        self.broker_silent = 0  # checks in a row in which the broker did not answer
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._data_dir_lock: IO[str] | None = None

    def lock_data_dir(self) -> None:
        """One `serve` per data directory on this machine, with the embedded broker or not: the
        lock goes with the process (a `serve` killed outright leaves its workers to finish their
        job and stop by themselves). The embedded broker's owner file also catches a `serve` in
        another container sharing the directory."""
        path = self.settings.data_dir / "run" / "serve.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise RuntimeError(
                f"another ghostouch serve (pid {holder}) runs on {self.settings.data_dir}; "
                "stop it, or give this one another data directory"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._data_dir_lock = lock

    def start(self) -> None:
        if self._data_dir_lock is None:
            self.lock_data_dir()
        if self.broker is not None:
            self.broker_started_at = time.monotonic()
            self.broker.start()
            log.info("embedded broker on %s (%s)", self.broker.socket_path, self.broker.binary)
        self.before_workers()
        if self.broker is not None:
            self._requeue_everything_pending()
        for i in range(self.n_workers):
            self.workers.append(self._start_worker(i))
            self.started_at.append(time.monotonic())
        self._watcher = threading.Thread(target=self._watch, name="serve-supervisor", daemon=True)
        self._watcher.start()

    def _start_worker(self, i: int) -> subprocess.Popen[bytes]:
        command = python_cli("worker", "--name", f"serve{i}", "--no-ensure-base", "--parent-pid", str(os.getpid()))
        # A process group of its own: Ctrl-C in the terminal reaches `serve` alone, which then
        # stops everything in order (instead of the watcher seeing workers die and restarting them).
        return subprocess.Popen(command, process_group=0)

    def _requeue_everything_pending(self) -> None:
        from ghostouch.jobs.celery_app import make_celery
        from ghostouch.jobs.recovery import requeue_lost_jobs

        requeued = requeue_lost_jobs(make_celery(self.settings), self.settings, pending_after_s=0)
        if requeued:
            log.info("queued %d unfinished job(s) again (the embedded broker starts empty)", len(requeued))

    def _watch(self) -> None:
        while not self._stopping.wait(CHECK_SECONDS):
            try:
                with self._lock:  # `stop` waits for a restart in progress, then nothing restarts
                    if not self._stopping.is_set():
                        self.check()
            except Exception:  # pragma: no cover - keep supervising; the next check tries again
                log.exception("supervision check failed")

    def check(self) -> None:
        """Start again whatever died (called every CHECK_SECONDS)."""
        if self.broker is not None and self._broker_is_down(self.broker):
            if self._pause_before_restart(self.broker_started_at):
                return
            self.broker.stop()
            self.broker_started_at = time.monotonic()
            self.broker.start()
            self._requeue_everything_pending()
        for i, proc in enumerate(self.workers):
            if proc.poll() is None:
                continue
            log.error("worker %d exited with code %s; starting it again", i, proc.returncode)
            if self._pause_before_restart(self.started_at[i]):
                return
            self.workers[i] = self._start_worker(i)
            self.started_at[i] = time.monotonic()

    def _broker_is_down(self, broker: EmbeddedBroker) -> bool:
        """Exited, or not answering on its socket for three checks in a row (its socket file
        deleted, say)."""
        if broker.process is None or broker.process.poll() is not None:
            code = broker.process.returncode if broker.process is not None else None
            log.error("embedded broker exited with code %s; starting it again", code)
            return True
        answer = broker.answers()
        if answer is None:  # `serve` itself is out of file descriptors: no reason to restart the broker
            log.warning("cannot check the embedded broker: this process has no file descriptor left")
            return False
        self.broker_silent = 0 if answer else self.broker_silent + 1
        if self.broker_silent >= 3:
            log.error("embedded broker stopped answering on %s; starting it again", broker.socket_path)
            self.broker_silent = 0
            return True
        return False

    def _pause_before_restart(self, started_at: float) -> bool:
        """Wait a little before restarting what died within a minute of starting (so a process
        that cannot start does not spin); True when `serve` is stopping meanwhile."""
        if time.monotonic() - started_at < 60:
            return self._stopping.wait(RESTART_PAUSE_SECONDS)
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._stop_children()
        if self._watcher is not None:
            self._watcher.join(timeout=CHECK_SECONDS + 1)
        if self._data_dir_lock is not None:
            self._data_dir_lock.close()  # releases the lock
            self._data_dir_lock = None

    def _stop_children(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.workers:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.broker is not None:
            self.broker.stop()
