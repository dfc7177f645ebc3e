"""What every command checks before it starts: that the API can listen where it is told, that
the registry database answers (its schema brought up to date) and that the storage takes a probe
object. A setting that cannot work stops the command with one line naming it (`ConfigError`)."""

from __future__ import annotations

import logging
import socket

from ghostouch.config import ConfigError, Settings, without_password
from ghostouch.storage import ObjectStore
from ghostouch.text import first_line

log = logging.getLogger(__name__)


def check_listen_address(settings: Settings) -> None:
    """The API's host and port can be listened on (checked before the broker and workers start)."""
    try:
        family = socket.AF_INET
        if settings.host:
            family = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((settings.host, settings.port), family=family):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f"GHOSTOUCH_HOST={settings.host!r}, GHOSTOUCH_PORT={settings.port}"
        raise ConfigError(f"{where}: cannot listen there ({reason})") from None


def prepare_data_dir(settings: Settings, links: bool = False, always: bool = False, create: bool = True) -> None:
    """Make the data directory, owner-only (it holds the registry, the signing key and users'
    recordings), when the command keeps something there: `always` (serve's lock and embedded
    broker), else what `Settings.data_dir_holds` names (`links`: the API's signing key). Without
    `create` it must exist already: a mistyped one must not pass for an empty store."""
    if not (always or settings.data_dir_holds(links)):
        return  # Firebase storage and an external database: nothing lives there
    if not create and not settings.data_dir.is_dir():
        raise ConfigError(f"GHOSTOUCH_DATA_DIR={str(settings.data_dir)!r}: no such directory")
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"GHOSTOUCH_DATA_DIR={str(settings.data_dir)!r}: cannot create it ({exc.strerror})") from None


def warn_of_one_machine_state(settings: Settings, api: bool) -> None:
    """An external broker and a database other than SQLite are how API and workers on several
    machines are set up: warn of what then works only where the machines share the data directory,
    local storage and (`api`) a signing key generated there."""
    if not settings.broker_url or settings.resolved_database_url.startswith("sqlite"):
        return
    data_dir = settings.data_dir.resolve()
    if settings.storage == "local":
        log.warning(
            "GHOSTOUCH_STORAGE=local with an external broker and database: every API and worker must share "
            "this data directory, %s (one machine, or a shared file system mounted as each one's "
            "GHOSTOUCH_DATA_DIR), or jobs fail as workers miss the files the API stored; on machines with disks "
            "of their own, use GHOSTOUCH_STORAGE=firebase",
            data_dir,
        )
    if api and settings.generates_signing_key:
        log.warning(
            "GHOSTOUCH_SIGNING_SECRET is unset: download links are signed with a key generated in %s, so "
            "API machines that do not share it refuse each other's links (403) and a fresh disk at a restart "
            "invalidates every link issued; set the same GHOSTOUCH_SIGNING_SECRET on every API machine",
            data_dir,
        )


def registry_failures() -> tuple[type[BaseException], ...]:
    """What opening an unusable registry database raises: driver and connection errors, a
    missing driver module, an unknown migration revision, an unwritable SQLite file, a URL whose
    port is not a number (ValueError)."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, ImportError, CommandError, OSError, ValueError)


def unusable_registry(url: str, exc: BaseException) -> ConfigError:
    problem = f"cannot use the registry database {without_password(url)} ({first_line(exc)})"
    return ConfigError(f"GHOSTOUCH_DATABASE_URL: {problem}")


def check_services(settings: Settings, storage: bool = True, broker: bool = False, links: bool = False) -> None:
    """The registry database answers (its schema brought up to date), the store takes a probe
    object (written, read back, deleted) and, with `broker`, a configured broker answers: a
    setting that cannot work (a wrong bucket, a broker URL naming no database) stops the command
    with one line, not a worker failing every job or an API answering 503 to each. `links`: the
    store is the API's, which signs download links."""
    from ghostouch.registry.db import migrate

    try:
        migrate(settings.resolved_database_url)
    except registry_failures() as exc:
        raise unusable_registry(settings.resolved_database_url, exc) from None
    if storage:
        usable_store(settings, links).close()
    if broker and settings.broker_url:  # (the embedded broker is `serve`'s own, started after this)
        check_broker(settings)


def check_broker(settings: Settings) -> None:
    """ConfigError when the configured broker URL cannot work: a port or database that is not a
    number, a database or password Redis refuses. A broker that does not answer yet (starting,
    restarting) is only warned of: the API serves `/status` and downloads meanwhile and answers
    503 to new jobs, and a worker keeps trying to connect."""
    from ghostouch.jobs.celery_app import make_celery

    app = make_celery(settings, answering_phones=True)  # short timeouts: one try, no retry loop
    url = without_password(str(settings.broker_url))
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            connection.default_channel.client.ping()
    except Exception as exc:  # kombu, redis-py and URL parsing each raise their own
        problem = first_line(exc) or type(exc).__name__
        if not _setting_at_fault(exc):
            log.warning("GHOSTOUCH_BROKER_URL=%r does not answer yet (%s); starting anyway", url, problem)
            return
        raise ConfigError(f"GHOSTOUCH_BROKER_URL={url!r}: cannot use the broker ({problem})") from None
    finally:
        app.close()


def _setting_at_fault(exc: BaseException) -> bool:
    """Whether a broker failure comes from the URL itself (or Redis refusing what it names, or
    another kind of server answering), rather than from a broker not reachable at the moment."""
    from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError

    seen: BaseException | None = exc
    while seen is not None:
        # InvalidResponse: something other than Redis answers there (an HTTP server, say).
        if isinstance(seen, ValueError | ResponseError | AuthenticationError | InvalidResponse):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def usable_store(settings: Settings, links: bool = False) -> ObjectStore:
    """The configured store, once it has taken a probe object; ConfigError otherwise."""
    from ghostouch.storage import StorageError, build_store

    try:
        store = build_store(settings.storage_settings(links=links))
        try:
            store.check_writable()
        except BaseException:
            store.close()
            raise
    except StorageError as exc:
        raise ConfigError(f"GHOSTOUCH_STORAGE={settings.storage}: {exc}") from None
    return store
