"""Tables of the registry: model versions, their gestures, shared sample sets and jobs.

Training frames are stored once, as content-addressed sample sets in object storage; a model
version's gesture points at the sample sets it was trained on, so a child shares its parent's
frames by reference instead of copying them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, literal
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


def utcnow() -> datetime:
    """This machine's clock: never for times another machine compares (see `db_now`)."""
    return datetime.now(UTC)


class DbNow(FunctionElement[datetime]):
    """SQL: the registry database's current UTC time, less the seconds of its one argument if any."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"


def db_now(seconds_ago: float = 0.0) -> DbNow:
    """The one clock of the registry's times (created, heartbeat, claimed, sent) and of every
    comparison with them: the database's, evaluated by it. Machines' clocks disagree (a worker
    whose clock ran ahead took over jobs that were alive); the database's is one clock for all."""
    return DbNow(literal(float(seconds_ago), Float())) if seconds_ago else DbNow()


@compiles(DbNow, "sqlite")
def _sqlite_now(element: DbNow, compiler: SQLCompiler, **kw: object) -> str:
    # In the format SQLAlchemy stores datetimes in on SQLite ('YYYY-MM-DD HH:MM:SS.ffffff', UTC), so
    # that stored and computed times compare as strings (CURRENT_TIMESTAMP has no fraction of a second).
    modifier = ""
    if len(element.clauses):
        modifier = f", printf('%.6f seconds', -({compiler.process(element.clauses, **kw)}))"
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now'{modifier}) || '000')"


@compiles(DbNow, "postgresql")
def _postgresql_now(element: DbNow, compiler: SQLCompiler, **kw: object) -> str:
    if not len(element.clauses):
        return "statement_timestamp()"  # (now() would be when the transaction began)
    return f"(statement_timestamp() - make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(DbNow)
def _other_now(element: DbNow, compiler: SQLCompiler, **kw: object) -> str:
    raise CompileError(f"the registry's clock is not known for {compiler.dialect.name} (SQLite or PostgreSQL)")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC, saying so: SQLite hands back the stored UTC times without a zone,
    PostgreSQL in its session's zone."""
    return (moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class SampleSet(Base):
    """A block of frames (float32 [n, 64]) stored once under `storage_key`, named by its sha256."""

    __tablename__ = "sample_sets"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_frames: Mapped[int] = mapped_column(Integer)
    n_bytes: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())


class ModelVersion(Base):
    __tablename__ = "model_versions"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_code: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("model_versions.code"), nullable=True, index=True
    )
    owner: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "base" | "trained" | "edited"
    description: Mapped[str] = mapped_column(Text, default="")
    training_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"tflite": {"key": ..., "sha256": ..., "bytes": ...}, "labels": {...}, ...}
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())

    gestures: Mapped[list[Gesture]] = relationship(
        back_populates="model", order_by="Gesture.output_index", cascade="all, delete-orphan"
    )

    def label_map(self) -> dict[str, int]:
        return {g.name: g.output_index for g in self.gestures}


class Gesture(Base):
    __tablename__ = "gestures"
    __table_args__ = (
        UniqueConstraint("model_code", "output_index"),
        UniqueConstraint("model_code", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_code: Mapped[str] = mapped_column(String(64), ForeignKey("model_versions.code"))
    output_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(256))
    # Ordered list of sample-set sha256 references.
    sample_refs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    n_frames: Mapped[int] = mapped_column(Integer, default=0)

    model: Mapped[ModelVersion] = relationship(back_populates="gestures")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key"),)

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="train")
    parent_code: Mapped[str] = mapped_column(String(64), index=True)
    gesture: Mapped[str] = mapped_column(String(256))
    sample_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="PENDING", index=True)
    current_step: Mapped[str] = mapped_column(String(200), default="queued")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_info: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    child_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)  # "host:pid" running it
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # this attempt
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now(), onupdate=db_now())
