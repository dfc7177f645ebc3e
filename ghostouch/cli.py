"""`ghostouch serve | api | worker | base import | base ensure`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ghostouch.config import BASE_CODE, ConfigError, Settings, get_settings, without_password
from ghostouch.preflight import (
    check_listen_address,
    check_services,
    prepare_data_dir,
    registry_failures,
    unusable_registry,
    usable_store,
    warn_of_one_machine_state,
)
from ghostouch.supervisor import ServeProcesses, python_cli
from ghostouch.text import first_line

if TYPE_CHECKING:
    from ghostouch.storage import ObjectStore

log = logging.getLogger("ghostouch")


def _apply_overrides(
    args: argparse.Namespace, links: bool = False, always: bool = False, create_data_dir: bool = True
) -> Settings:
    """Command-line options win over the environment; exported so child processes agree. The data
    directory is made (or, without `create_data_dir`, must exist) only where the command keeps
    something in it (`preflight.prepare_data_dir`)."""
    for option, env in (("host", "GHOSTOUCH_HOST"), ("port", "GHOSTOUCH_PORT"), ("data_dir", "GHOSTOUCH_DATA_DIR")):
        value = getattr(args, option, None)
        if value is not None:
            os.environ[env] = str(Path(value).resolve()) if option == "data_dir" else str(value)
    get_settings.cache_clear()
    settings = get_settings()
    prepare_data_dir(settings, links, always, create_data_dir)
    os.environ["GHOSTOUCH_DATA_DIR"] = str(settings.data_dir.resolve())
    return settings


def _ensure_base_in_subprocess(settings: Settings) -> None:
    """Provision base_v1 if the registry lacks it, in a child process (TensorFlow stays out of here)."""
    from ghostouch.registry import repo
    from ghostouch.registry.db import migrate

    migrate(settings.resolved_database_url)
    if repo.get_model(settings.resolved_database_url, BASE_CODE) is None:
        log.info("provisioning base_v1 (first start)")
        subprocess.run(python_cli("base", "ensure"), check=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from ghostouch.api.server import raise_open_file_limit

    settings = _apply_overrides(args, always=True)  # its lock, the embedded broker
    raise_open_file_limit()  # before the workers and broker start: they inherit it
    # SIGTERM (systemd, docker stop) and SIGHUP (a closed terminal) end `serve` as Ctrl-C does,
    # through the `finally` below that stops the workers and the broker. (uvicorn handles them
    # while it serves, then raises them again once it has stopped: they arrive here.)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))  # uvicorn handles SIGTERM
    processes = ServeProcesses(settings, args.workers or settings.workers, lambda: _ensure_base_in_subprocess(settings))
    try:
        try:
            processes.lock_data_dir()  # before anything touches the registry (a migration, say)
            check_listen_address(settings)
            check_services(settings, broker=True, links=True)
            processes.start()
        except RuntimeError as exc:  # e.g. another serve runs on this data directory
            print(f"ghostouch serve: {exc}", file=sys.stderr)
            return 1
        return _run_api(settings)
    finally:
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        processes.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _exit_with_parent(parent: int) -> None:
    """End this worker (gracefully, as SIGTERM does) once process `parent`, the `serve` that
    started it, is gone, even when that was SIGKILL: a worker of a dead `serve` must not run on
    unsupervised."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        log.warning("the serve process that started this worker is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def guessed_link_host(settings: Settings) -> bool:
    """Whether the download links name a host guessed from this machine: they are answered by
    this API (local storage, or Firebase without public links), it listens on every interface,
    and GHOSTOUCH_PUBLIC_URL does not say where phones reach it."""
    links_name_this_api = settings.storage == "local" or not settings.public_links  # else: the bucket
    return settings.listens_everywhere and not settings.public_url and links_name_this_api


def _run_api(settings: Settings) -> int:
    import uvicorn

    from ghostouch.api.app import create_app
    from ghostouch.api.server import KEEP_ALIVE_SECONDS, IdleClosingProtocol

    log.info("API on http://%s:%s (downloads via %s)", settings.host, settings.port, settings.resolved_public_url)
    if guessed_link_host(settings):
        log.warning(
            "listening on every interface: download links use this host's name (%s); set "
            "GHOSTOUCH_PUBLIC_URL to the address phones reach",
            settings.resolved_public_url,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        http=IdleClosingProtocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from ghostouch.api.server import raise_open_file_limit

    settings = _apply_overrides(args, links=True)
    raise_open_file_limit()
    if not settings.broker_url:
        print(
            "ghostouch api needs GHOSTOUCH_BROKER_URL=redis://host:port/db (or use `ghostouch serve`)", file=sys.stderr
        )
        return 2
    check_listen_address(settings)
    check_services(settings, broker=True, links=True)
    warn_of_one_machine_state(settings, api=True)
    return _run_api(settings)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _apply_overrides(args)
    check_services(settings, broker=True)  # a worker that cannot reach them would take jobs it can only drop
    warn_of_one_machine_state(settings, api=False)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    if not args.no_ensure_base:
        _ensure_base_in_subprocess(settings)
    from ghostouch.jobs.celery_app import QUEUE
    from ghostouch.jobs.worker import NODE_ENV, app, node_name

    hostname = node_name(args.name)
    os.environ[NODE_ENV] = hostname  # pool processes report it once warm (/readyz)
    app.worker_main(
        [
            "worker",
            "-Q",
            QUEUE,
            "-c",
            str(args.concurrency),
            "-n",
            hostname,
            "--loglevel",
            settings.log_level,
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def cmd_base_ensure(args: argparse.Namespace) -> int:
    from ghostouch.bases import ensure_base

    settings = _apply_overrides(args)
    check_services(settings)
    created = ensure_base(settings)
    print("base_v1 provisioned" if created else "base_v1 already present")
    return 0


def cmd_base_import(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from ghostouch.bases import TRAINING_FRAMES_PER_GESTURE, import_base
    from ghostouch.engine.verify import ModelCheckFailed
    from ghostouch.storage import StorageError

    settings = _apply_overrides(args)
    check_services(settings)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    try:
        model = import_base(settings, Path(args.file), args.code, labels, args.many_hands)
    except ModelCheckFailed as exc:
        problem = (
            f"the model could not be trained to the service's checks ({exc}); the labels may hold the same "
            "pose: check that each label's frames show a pose of its own"
        )
    except (ValueError, OSError, StorageError) as exc:  # FrameError and InvalidName are ValueErrors
        problem = str(exc) or type(exc).__name__
    except SQLAlchemyError as exc:
        problem = f"the registry database failed: {first_line(exc)}"
    else:
        counts = ", ".join(f"{g.name}={g.output_index} ({g.n_frames} frames)" for g in model.gestures)
        agreement = model.metrics.get("uint8_agreement")
        capped = any(g.n_frames > TRAINING_FRAMES_PER_GESTURE for g in model.gestures)
        spread = f"; trained on an even spread of at most {TRAINING_FRAMES_PER_GESTURE} per label" if capped else ""
        print(f"imported {model.code}: {counts}{spread}; uint8/float agreement {agreement:.1%}")
        return 0
    print("error: " + " ".join(problem.split()), file=sys.stderr)  # one line, whatever the message held
    return 2


def cmd_storage_sweep(args: argparse.Namespace) -> int:
    """Two listings `--wait` seconds apart; files unreferenced in both and older than `--min-age`
    are deleted (a job still publishing has written its files within its time limit)."""
    from ghostouch.registry.db import has_registry

    settings = _apply_overrides(args, create_data_dir=False)
    url = settings.resolved_database_url
    try:
        found = has_registry(url)
    except registry_failures() as exc:
        raise unusable_registry(url, exc) from None
    if not found:  # never sweep against a new, empty registry (nor create one)
        raise ConfigError(f"no registry in {without_password(url)}: set GHOSTOUCH_DATABASE_URL or GHOSTOUCH_DATA_DIR")
    check_services(settings, storage=False)
    store = usable_store(settings)
    try:
        return _sweep(store, args, settings)
    finally:
        store.close()


def _sweep(store: ObjectStore, args: argparse.Namespace, settings: Settings) -> int:
    from ghostouch.storage import LocalObjectStore
    from ghostouch.sweep import LeftoverSweep, SweepRefused, UnusedSampleSweep

    db_url = settings.resolved_database_url
    min_age = settings.leftover_min_age_seconds if args.min_age is None else args.min_age
    models = LeftoverSweep(min_age, force=args.force)
    samples = UnusedSampleSweep(min_age, args.keep_frames_days, force=args.force)
    try:
        for sweep in (models, samples):
            sweep.plan(db_url, store)
        time.sleep(args.wait)
        doomed = [(sweep, sweep.plan(db_url, store)) for sweep in (models, samples)]  # both, or nothing
    except SweepRefused as exc:
        print(f"ghostouch storage sweep: nothing deleted: {exc}", file=sys.stderr)
        return 1
    for (sweep, keys), said in zip(
        doomed, ("model file(s) no version", "sample set(s) no version or recent job"), strict=True
    ):
        deleted = sweep.delete(db_url, store, keys)
        print(f"deleted {len(deleted)} {said} refers to in {store.description}")
        for key in deleted:
            print(f"  {key}")
    if isinstance(store, LocalObjectStore):
        unfinished = store.remove_stale_temp_files(min_age, now=store.store_time())  # (the clock that stamped them)
        print(f"deleted {len(unfinished)} temporary file(s) of writes that never finished")
        for name in unfinished:
            print(f"  {name}")
    return 0


def _days(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3650:
        raise argparse.ArgumentTypeError(f"must be 0 to 3650 days, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"must be 0 to 999999 seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghostouch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="data directory (default: $GHOSTOUCH_DATA_DIR or ./ghostouch-data)")

    serve = sub.add_parser("serve", help="API + workers + embedded broker on one machine")
    common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default: $GHOSTOUCH_WORKERS or 1)")
    serve.set_defaults(func=cmd_serve)

    api = sub.add_parser("api", help="the HTTP API alone (needs GHOSTOUCH_BROKER_URL)")
    common(api)
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="a training worker (uses GHOSTOUCH_BROKER_URL)")
    common(worker)
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--name", help="start of its node name, NAME-PID-RANDOM@HOST (default: worker)")
    worker.add_argument("--no-ensure-base", action="store_true", help=argparse.SUPPRESS)
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # stop when this process is gone
    worker.set_defaults(func=cmd_worker)

    base = sub.add_parser("base", help="base models").add_subparsers(dest="base_command", required=True)
    imp = base.add_parser("import", help="train a base model from a CSV (label,0..63)")
    common(imp)
    imp.add_argument("file")
    imp.add_argument("--code", required=True)
    imp.add_argument("--labels", help="comma-separated output order (default: base_v1's, else sorted)")
    imp.add_argument(
        "--many-hands",
        action="store_true",
        help="the CSV holds many people's hands: this base's world-landmark lineage goes without the familiarity gate",
    )
    imp.set_defaults(func=cmd_base_import)
    ensure = base.add_parser("ensure", help="provision the synthetic base_v1 if missing")
    common(ensure)
    ensure.set_defaults(func=cmd_base_ensure)

    storage = sub.add_parser("storage", help="the model store").add_subparsers(dest="storage_command", required=True)
    sweep = storage.add_parser(
        "sweep",
        help="delete model files and recorded frames nothing refers to (a store this registry alone writes to)",
    )
    common(sweep)
    sweep.add_argument("--wait", type=_seconds, default=60.0, help="seconds between the two listings (default 60)")
    sweep.add_argument(
        "--min-age",
        type=_seconds,
        default=None,
        help="keep files younger than this many seconds (default: the job time limit + 120 s, so that "
        "no job still publishing loses its files)",
    )
    sweep.add_argument(
        "--keep-frames-days",
        type=_days,
        default=7.0,
        help="keep the recorded frames of jobs that ended without a model (DUPLICATE, FAILURE) this many days, "
        "so that a retry finds them (default 7)",
    )
    sweep.add_argument("--force", action="store_true", help="delete even when the registry looks like another store's")
    sweep.set_defaults(func=cmd_storage_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = os.environ.get("GHOSTOUCH_LOG_LEVEL", "INFO").upper()  # a bad one is reported below
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic tells of its plugins and dialect at every start; `migrate` logs a schema change.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        parts = (args.command, getattr(args, "base_command", None), getattr(args, "storage_command", None))
        command = " ".join(str(part) for part in parts if part)
        print(f"ghostouch {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
