"""Registry operations: jobs, model versions and the shared sample sets behind them."""

from __future__ import annotations

import hashlib
import io
import re
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ghostouch.registry.db import session_scope
from ghostouch.registry.schema import Gesture, ModelVersion, SampleSet, iso_utc
from ghostouch.storage import ObjectStore

CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SYSTEM_OWNER = "system"


def new_code() -> str:
    """An unguessable model code (96 random bits), safe in URLs and storage keys."""
    return "m" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


def is_valid_code(code: str) -> bool:
    return bool(CODE_PATTERN.fullmatch(code))


# ---- sample sets -------------------------------------------------------------------------


def frames_to_bytes(frames: npt.NDArray[np.float32]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frames, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def sample_ref_of(data: bytes | npt.NDArray[np.float32]) -> str:
    """The content address of a sample set (of its stored bytes, or of the frames)."""
    raw = data if isinstance(data, bytes) else frames_to_bytes(data)
    return hashlib.sha256(raw).hexdigest()


def store_sample_set(db_url: str, store: ObjectStore, frames: npt.NDArray[np.float32]) -> str:
    """Store frames once (content-addressed) and return their sha256 reference."""
    data = frames_to_bytes(frames)
    sha = sample_ref_of(data)
    key = f"samples/{sha}.npy"
    with session_scope(db_url) as s:
        if s.get(SampleSet, sha) is not None:
            return sha
    if not store.exists(key):
        store.put_bytes(key, data)
    try:
        with session_scope(db_url) as s:
            s.add(SampleSet(sha256=sha, n_frames=len(frames), n_bytes=len(data), storage_key=key))
    except IntegrityError:
        pass  # stored concurrently by another request: same content, same row
    return sha


class MissingSamples(LookupError):
    """A sample set a model version refers to is not in the registry."""


def count_sample_frames(db_url: str, refs: list[str]) -> int:
    """How many frames the referenced sample sets hold (a set referenced twice counts twice)."""
    with session_scope(db_url) as s:
        sizes = {r.sha256: r.n_frames for r in s.scalars(select(SampleSet).where(SampleSet.sha256.in_(refs)))}
    missing = [ref for ref in refs if ref not in sizes]
    if missing:
        raise MissingSamples(f"training samples {missing[0]} are missing from the registry")
    return sum(sizes[ref] for ref in refs)


def load_sample_sets(db_url: str, store: ObjectStore, refs: list[str]) -> npt.NDArray[np.float32]:
    """Frames of the referenced sample sets, concatenated in order."""
    with session_scope(db_url) as s:
        rows = {r.sha256: r for r in s.scalars(select(SampleSet).where(SampleSet.sha256.in_(refs)))}
    arrays = []
    for ref in refs:
        row = rows.get(ref)
        if row is None:
            raise MissingSamples(f"training samples {ref} are missing from the registry")
        arrays.append(np.load(io.BytesIO(store.get_bytes(row.storage_key)), allow_pickle=False))
    if not arrays:
        return np.empty((0, 64), np.float32)
    return np.concatenate(arrays).astype(np.float32)


# ---- models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GestureInfo:
    name: str
    output_index: int
    sample_refs: list[str]
    n_frames: int


@dataclass(frozen=True)
class ModelInfo:
    code: str
    parent_code: str | None
    owner: str
    kind: str
    description: str
    gestures: list[GestureInfo]
    metrics: dict[str, Any]
    artifacts: dict[str, Any]
    training_config: dict[str, Any]
    created_at: str

    @property
    def labels(self) -> list[str]:
        return [g.name for g in self.gestures]

    def label_map(self) -> dict[str, int]:
        return {g.name: g.output_index for g in self.gestures}

    def usable_by(self, owner: str) -> bool:
        return self.owner in (owner, SYSTEM_OWNER)


def _info(m: ModelVersion) -> ModelInfo:
    return ModelInfo(
        code=m.code,
        parent_code=m.parent_code,
        owner=m.owner,
        kind=m.kind,
        description=m.description,
        gestures=[GestureInfo(g.name, g.output_index, list(g.sample_refs), g.n_frames) for g in m.gestures],
        metrics=dict(m.metrics or {}),
        artifacts=dict(m.artifacts or {}),
        training_config=dict(m.training_config or {}),
        created_at=iso_utc(m.created_at),
    )


def get_model(db_url: str, code: str) -> ModelInfo | None:
    if not is_valid_code(code):
        return None
    with session_scope(db_url) as s:
        m = s.scalars(
            select(ModelVersion).where(ModelVersion.code == code).options(selectinload(ModelVersion.gestures))
        ).first()
        return _info(m) if m else None


def lineage(db_url: str, code: str) -> list[str]:
    """Codes from `code` up to its root base, `code` first."""
    chain: list[str] = []
    with session_scope(db_url) as s:
        current: str | None = code
        while current and current not in chain:
            chain.append(current)
            m = s.get(ModelVersion, current)
            current = m.parent_code if m else None
    return chain


def list_models(db_url: str, owner: str) -> list[ModelInfo]:
    with session_scope(db_url) as s:
        rows = s.scalars(
            select(ModelVersion)
            .where(ModelVersion.owner == owner)
            .order_by(ModelVersion.created_at, ModelVersion.code)  # (SQLite: milliseconds)
            .options(selectinload(ModelVersion.gestures))
        )
        return [_info(m) for m in rows]


def sample_refs_of_versions(db_url: str) -> set[str]:
    """Every sample set a registered model version's gestures refer to."""
    with session_scope(db_url) as s:
        return {ref for refs in s.scalars(select(Gesture.sample_refs)) for ref in (refs or [])}


def forget_sample_set(db_url: str, sha: str) -> None:
    """Drop a sample set's registry row (its object is deleted by the caller)."""
    with session_scope(db_url) as s:
        row = s.get(SampleSet, sha)
        if row is not None:
            s.delete(row)


def artifact_keys_in_use(db_url: str) -> set[str]:
    """Storage keys of every registered model version's files."""
    with session_scope(db_url) as s:
        return {a["key"] for artifacts in s.scalars(select(ModelVersion.artifacts)) for a in (artifacts or {}).values()}


def save_model(
    s: Session,
    *,
    code: str,
    parent_code: str | None,
    owner: str,
    kind: str,
    gestures: list[GestureInfo],
    artifacts: dict[str, Any],
    metrics: dict[str, Any],
    training_config: dict[str, Any],
    description: str = "",
    replace: bool = False,
) -> None:
    """Insert a model version (or, with `replace`, swap a base's content) inside session `s`."""
    existing = s.get(ModelVersion, code)
    if existing is not None and not replace:
        raise ValueError(f"model {code} already exists")
    if existing is None:
        existing = ModelVersion(code=code, owner=owner, kind=kind)
        s.add(existing)
    else:
        existing.gestures.clear()
        s.flush()
    existing.parent_code = parent_code
    existing.owner, existing.kind, existing.description = owner, kind, description
    existing.artifacts, existing.metrics, existing.training_config = artifacts, metrics, training_config
    for g in gestures:
        existing.gestures.append(
            Gesture(name=g.name, output_index=g.output_index, sample_refs=g.sample_refs, n_frames=g.n_frames)
        )


# ---- jobs --------------------------------------------------------------------------------
