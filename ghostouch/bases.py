"""Base models: `base_v1` from the synthetic hand generator, or imported from a CSV.

Runs in processes that may load TensorFlow (the worker, the CLI), never in the API.
"""

from __future__ import annotations

import csv
import logging
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy.exc import IntegrityError

from ghostouch.config import Settings
from ghostouch.engine.frames import FRAME_SIZE, FrameError, frame_problem
from ghostouch.engine.trainer import EngineConfig, GestureFrames, train_gesture_model
from ghostouch.jobs.training import context_for
from ghostouch.publishing import publish_model
from ghostouch.registry import repo

log = logging.getLogger(__name__)

BASE_CODE = "base_v1"
# The label order the shipped apps hard-code for base_v1.
BASE_V1_LABELS = ("paper", "rock", "scissors")
SYNTHETIC_FRAMES_PER_GESTURE = 300
# Frames of many hands are no prototypes of what one user's hand will show: real base_v1.csv
# frames lie about as far from the synthetic base's frames as poses never taught do
# (bench/RESULTS.md, "World-landmark models get the gate too"), so the synthetic base, bases
# imported with `many_hands`, and every model trained from them go without the familiarity gate
# (jobs/training.py carries the setting down the lineage).
MANY_HANDS_CONFIG = EngineConfig(gate_3d=False)


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Frames per label from a CSV in the apps' format: header `label,0..63`, one frame a row."""
    per_label: dict[str, list[list[float]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) != FRAME_SIZE + 1 or header[0].strip() != "label":
            raise FrameError(f"{path}: expected a header 'label,0,...,63' ({FRAME_SIZE + 1} columns)")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                values = [float(v) for v in row[1:]]
            except ValueError as exc:
                raise FrameError(f"{path}, line {line_no}: {exc}") from None
            problem = frame_problem(line_no, values)
            if problem:
                raise FrameError(f"{path}, line {line_no}: {problem.split(': ', 1)[-1]}")
            # Stored as the API stores gesture names (NFC, trimmed), so routes and checks find them.
            per_label.setdefault(unicodedata.normalize("NFC", row[0]).strip(), []).append(values)
    if len(per_label) < 2:
        raise FrameError(f"{path}: a base model needs at least two labels, found {sorted(per_label)}")
    return {k: np.asarray(v, dtype=np.float32) for k, v in per_label.items()}


def order_labels(found: Sequence[str], code: str, explicit: Sequence[str] | None) -> list[str]:
    if explicit:
        repeated = sorted({name for name in explicit if list(explicit).count(name) > 1})
        if repeated:
            raise ValueError(f"--labels names each label once; repeated: {', '.join(repeated)}")
        missing = set(explicit) ^ set(found)
        if missing:
            raise ValueError(f"--labels must list exactly the CSV's labels; differing: {sorted(missing)}")
        return list(explicit)
    if code == BASE_CODE:
        if set(found) != set(BASE_V1_LABELS):
            raise ValueError(f"{BASE_CODE} must have exactly the labels {', '.join(BASE_V1_LABELS)}")
        return list(BASE_V1_LABELS)
    return sorted(found)


def create_base(
    settings: Settings,
    code: str,
    data: dict[str, np.ndarray],
    labels: list[str],
    description: str,
    config: EngineConfig | None = None,
) -> repo.ModelInfo:
    """Train and publish a base model (replacing an existing base of the same code)."""
    config = config or EngineConfig()
    if not repo.is_valid_code(code):
        raise ValueError(f"model code {code!r}: use 1-64 letters, digits, '_' or '-'")
    ctx = context_for(settings)
    existing = repo.get_model(ctx.db_url, code)
    if existing is not None and existing.kind != "base":
        raise ValueError(f"{code} is a trained model, not a base; choose another code")
    trained = train_gesture_model([GestureFrames(name, data[name]) for name in labels], config)
    infos = [
        repo.GestureInfo(name, i, [repo.store_sample_set(ctx.db_url, ctx.store, data[name])], len(data[name]))
        for i, name in enumerate(labels)
    ]
    publish_model(
        ctx.db_url,
        ctx.store,
        code=code,
        parent_code=None,
        owner=repo.SYSTEM_OWNER,
        kind="base",
        gestures=infos,
        tflite_uint8=trained.tflite_uint8,
        tflite_float=trained.tflite_float,
        metrics=trained.metrics,
        training_config=config.describe(),
        description=description,
        replace=existing is not None,
    )
    model = repo.get_model(ctx.db_url, code)
    assert model is not None
    return model


def synthetic_base_data(seed: int = 1) -> dict[str, np.ndarray]:
    from ghostouch.engine import hands

    rng = np.random.default_rng(seed)
    return {
        name: hands.generate_pose(name, SYNTHETIC_FRAMES_PER_GESTURE, rng, orientation="natural")
        for name in BASE_V1_LABELS
    }


def ensure_base(settings: Settings) -> bool:
    """Provision the synthetic `base_v1` when the registry has none; True when it was created."""
    db_url = settings.resolved_database_url
    if repo.get_model(db_url, BASE_CODE) is not None:
        return False
    log.info("provisioning %s from the synthetic hand generator", BASE_CODE)
    try:
        create_base(
            settings,
            BASE_CODE,
            synthetic_base_data(),
            list(BASE_V1_LABELS),
            "synthetic paper/rock/scissors from the kinematic hand generator",
            MANY_HANDS_CONFIG,
        )
    except (ValueError, IntegrityError):
        # Workers starting together on a new registry all provision it; the first to publish
        # wins (its files and row stay), the others find its version and keep it.
        if repo.get_model(db_url, BASE_CODE) is None:
            raise
        log.info("%s was provisioned by another process meanwhile", BASE_CODE)
        return False
    return True


def import_base(
    settings: Settings, path: Path, code: str, labels: Sequence[str] | None = None, many_hands: bool = False
) -> repo.ModelInfo:
    data = read_csv(path)
    labels = [unicodedata.normalize("NFC", name).strip() for name in labels] if labels else labels
    ordered = order_labels(list(data), code, labels)
    config = MANY_HANDS_CONFIG if many_hands else EngineConfig()
    return create_base(settings, code, data, ordered, f"imported from {path.name}", config)
