"""Database connection and schema migration (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_ENGINES: list[Engine] = []  # every engine `get_engine` made in this process


PSYCOPG_TIMEOUTS = {"connect_timeout": 5, "tcp_user_timeout": 10_000, "keepalives_idle": 10, "keepalives_interval": 3}


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        # A database that stops answering must not hold requests for minutes: connecting gives up
        # after 5 s, unacknowledged writes after 10 s (a network gone), and a request waits at
        # most 5 s for a pooled connection. Not covered: a server that still acknowledges packets
        # but never answers (a frozen host) holds the requests already on its pooled connections.
        args = PSYCOPG_TIMEOUTS if url.startswith("postgresql+psycopg://") else {}
        engine = create_engine(url, pool_pre_ping=True, pool_timeout=5, connect_args=args)
    _ENGINES.append(engine)
    return engine


def has_registry(url: str) -> bool:
    """Whether the database already holds a registry (its migration table), without creating one."""
    from sqlalchemy import inspect

    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():
            return False
    with get_engine(url).connect() as conn:
        return inspect(conn).has_table("alembic_version")


# PostgreSQL advisory lock held by the transaction that migrates: processes that start together
# on a new database (an API and its workers) migrate one after the other instead of all creating
# the same tables.
MIGRATION_LOCK_ID = 0x67686F73  # "ghos"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to the newest schema, or to `revision` (idempotent; safe for
    processes that start together: PostgreSQL migrations take an advisory lock, SQLite ones a
    file lock)."""
    from alembic import command  # imported here: Alembic is only needed once per process
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = get_engine(url)
    path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
    lock = _file_lock(Path(path + ".migrate-lock")) if path and path != ":memory:" else nullcontext()
    with lock, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        cfg.attributes["connection"] = connection
        before = _revision(connection)
        command.upgrade(cfg, revision)
        after = _revision(connection)
    where = engine.url.render_as_string()  # (its password hidden)
    if before is None and after is not None:
        log.info("registry schema created in %s (revision %s)", where, after)
    elif after != before:
        log.info("registry schema of %s brought from revision %s to %s", where, before, after)


def _revision(connection: Any) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@lru_cache(maxsize=8)
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: committed when the block ends normally, rolled back on error."""
    session = _session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def forget_connections() -> None:
    """In a freshly forked process: drop the engines inherited from the parent, whose pooled
    connections belong to it (the parent keeps using them), so this process opens its own."""
    while _ENGINES:
        _ENGINES.pop().dispose(close=False)
    get_engine.cache_clear()
    _session_factory.cache_clear()
