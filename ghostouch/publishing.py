"""Publishing a trained model: artifacts into storage first, then one registry transaction.

A model version becomes visible (in the registry, hence in `/status` and `/models`) only after
every artifact is stored and its checksum verified. If anything fails, the artifacts written so
far are deleted and nothing is visible. What such a clean-up cannot delete (a worker killed while
publishing, storage failing for the deletes too) is found by `sweep.LeftoverSweep`
(`ghostouch storage sweep`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from ghostouch.registry import repo
from ghostouch.registry.db import session_scope
from ghostouch.storage import ObjectStore

log = logging.getLogger(__name__)


def artifact_keys(code: str) -> dict[str, str]:
    """Storage keys of a version's files; a fresh revision segment keeps replaced bases apart."""
    rev = secrets.token_hex(4)
    prefix = f"models/{code}/{rev}"
    return {
        "tflite": f"{prefix}/{code}.tflite",
        "tflite_float": f"{prefix}/{code}_float.tflite",
        "labels": f"{prefix}/{code}_labels.json",
        "report": f"{prefix}/{code}_report.json",
    }


def renamed_in_report(metrics: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A version's metrics (its stored report) with gesture `old` called `new` wherever the
    report names gestures (`engine.trainer`'s evaluation, the duplicate check's scores)."""

    def name(value: Any) -> Any:
        return new if value == old else value

    def keys(table: Any) -> Any:
        return {name(k): v for k, v in table.items()} if isinstance(table, dict) else table

    renames = [*metrics.get("renames", []), {"from": old, "to": new}]  # the whole chain
    out = {**metrics, "renamed": renames[-1], "renames": renames}
    for field in ("labels", "orientation_twins"):
        if isinstance(out.get(field), list):
            out[field] = [[name(n) for n in item] if isinstance(item, list) else name(item) for item in out[field]]
    for field in ("holdout_per_class_accuracy", "training_frames"):
        if field in out:
            out[field] = keys(out[field])
    confusion = out.get("holdout_confusion")
    if isinstance(confusion, dict):
        rows = [name(n) for n in confusion.get("rows", [])]
        columns = list(confusion.get("columns", []))  # the gestures, then "no gesture"
        out["holdout_confusion"] = {**confusion, "rows": rows, "columns": rows + columns[len(rows) :]}
    duplicate = out.get("duplicate_check")
    if isinstance(duplicate, dict):
        shares = keys(duplicate.get("shares"))
        out["duplicate_check"] = {
            **duplicate,
            "existing_gesture": name(duplicate.get("existing_gesture")),
            "shares": shares,
        }
    return out


def publish_model(
    db_url: str,
    store: ObjectStore,
    *,
    code: str,
    parent_code: str | None,
    owner: str,
    kind: str,
    gestures: list[repo.GestureInfo],
    tflite_uint8: bytes,
    tflite_float: bytes,
    metrics: dict[str, Any],
    training_config: dict[str, Any],
    description: str = "",
    replace: bool = False,
    in_same_transaction: Callable[[Session], None] | None = None,
) -> dict[str, Any]:
    """Store the artifacts, then record the version; returns the artifacts record."""
    keys = artifact_keys(code)
    label_map = {g.name: g.output_index for g in gestures}
    contents = {
        "tflite": (tflite_uint8, "application/octet-stream"),
        "tflite_float": (tflite_float, "application/octet-stream"),
        "labels": (json.dumps(label_map, ensure_ascii=False).encode(), "application/json"),
        "report": (json.dumps(metrics, ensure_ascii=False, indent=1).encode(), "application/json"),
    }
    written: list[str] = []
    try:
        artifacts: dict[str, Any] = {}
        for name, (data, content_type) in contents.items():
            sha = store.put_bytes(keys[name], data, content_type)
            written.append(keys[name])
            artifacts[name] = {"key": keys[name], "sha256": sha, "bytes": len(data)}
        with session_scope(db_url) as s:
            repo.save_model(
                s,
                code=code,
                parent_code=parent_code,
                owner=owner,
                kind=kind,
                gestures=gestures,
                artifacts=artifacts,
                metrics=metrics,
                training_config=training_config,
                description=description,
                replace=replace,
            )
            if in_same_transaction is not None:
                in_same_transaction(s)
        return artifacts
    except BaseException:
        for key in written:
            with contextlib.suppress(Exception):  # best effort: the original error matters more
                store.delete(key)
        raise


def artifact_urls(store: ObjectStore, artifacts: dict[str, Any]) -> dict[str, str]:
    return {f"{name}_url": store.download_url(a["key"]) for name, a in artifacts.items()}


# What `artifact_keys` writes, and the only keys the sweep may delete: files of a bucket shared
# with anything else (the original deployment's models, say) are never touched.
ARTIFACT_KEY = re.compile(r"models/([^/]+)/[0-9a-f]{8}/\1(\.tflite|_float\.tflite|_labels\.json|_report\.json)")
