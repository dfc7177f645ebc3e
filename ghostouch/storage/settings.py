"""Configuration of the object store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ghostouch.storage.retry import RetryPolicy


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    """Everything `build_store` needs (keyword-only)."""

    backend: str = "local"  # "local" | "firebase"
    data_dir: Path  # the local backend keeps objects under data_dir / "objects"
    public_url: str  # base of local download URLs, e.g. "http://127.0.0.1:8000"
    signing_secret: bytes | None = None  # HMAC key of signed links; None: the store makes none (only the API does)
    link_ttl_seconds: int = 3600
    public_links: bool = False  # True: plain permanent URLs; False: expiring signed links
    firebase_credentials: Path | None = None  # service-account JSON
    firebase_bucket: str | None = None
    firebase_project_id: str | None = None
    retry_attempts: int = 4
    retry_base_delay: float = 0.2
    retry_deadline: float = 30.0  # no new attempt starts after this many seconds
    request_timeout: float = 20.0  # one request to a bucket

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.retry_attempts, base_delay=self.retry_base_delay, deadline=self.retry_deadline)
