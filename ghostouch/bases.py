"""Base models: `base_v1` from the synthetic hand generator, or imported from a CSV.

Runs in processes that may load TensorFlow (the worker, the CLI), never in the API.
"""

from __future__ import annotations

import csv
import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.exc import IntegrityError

from ghostouch.config import BASE_CODE, MIN_FRAMES, Settings
from ghostouch.engine.frames import (
    FRAME_SIZE,
    MIN_HAND_EXTENT,
    FrameError,
    frame_problem,
    hand_extent,
    layout_problem,
)
from ghostouch.engine.trainer import EngineConfig, GestureFrames, train_gesture_model
from ghostouch.jobs.training import context_for
from ghostouch.names import InvalidName, clean_gesture_name, lookalike_in, stored_form
from ghostouch.publishing import publish_model
from ghostouch.registry import repo
from ghostouch.text import quoted

log = logging.getLogger(__name__)

# The label order the shipped apps hard-code for base_v1.
BASE_V1_LABELS = ("paper", "rock", "scissors")
SYNTHETIC_FRAMES_PER_GESTURE = 300
# Frames of many hands are no prototypes of what one user's hand will show: real base_v1.csv
# frames lie about as far from the synthetic base's frames as poses never taught do
# (bench/RESULTS.md, "World-landmark models get the gate too"), so the synthetic base, bases
# imported with `many_hands`, and every model trained from them go without the familiarity gate
# (jobs/training.py carries the setting down the lineage).
MANY_HANDS_CONFIG = EngineConfig(gate_3d=False)
# A base is trained on at most this many frames per gesture, evenly spread over each label's
# frames in file order; every frame is still stored as the base's samples (children's duplicate
# checks compare with them). The engine's neighbour steps (stray frames, unknown poses, the gate)
# grow with the square of the frames they get: 20,000 frames per gesture took 2 minutes and
# 9.9 GB, 2,000 train in seconds within 1 GB. 2,000 is five times what a child trains on per
# gesture (`max_frames_per_gesture`, 400) and far more than one pose's variety needs.
TRAINING_FRAMES_PER_GESTURE = 2000


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Frames per label from a CSV in the apps' format: header `label,0..63`, one frame a row.

    The rules of a training request (`POST /train`, README "Request limits") apply: labels as
    gesture names (`names.clean_gesture_name`, stored in their trimmed NFC form), every value as
    `frames.frame_problem` checks it, and each label needs MIN_FRAMES frames that show a hand;
    frames that show none (landmarks within MIN_HAND_EXTENT, as when tracking was lost) are left
    out, as the API leaves them out. Errors name the CSV line and the value (column) at fault."""
    rows = _read_rows(path)
    if len(rows) < 2:
        raise FrameError(f"{path}: a base model needs at least two labels, found {sorted(rows)}")
    _refuse_shared_frames(path, rows)
    return {name: _hand_frames(path, name, label) for name, label in rows.items()}


def _refuse_shared_frames(path: Path, rows: dict[str, _LabelRows]) -> None:
    """FrameError when one frame is filed under two labels: the model cannot tell them apart
    there (a copy-paste slip in the file, or one recording exported twice)."""
    first: dict[bytes, tuple[str, int]] = {}
    for name, label in rows.items():
        frames = np.frombuffer(label.values, dtype=np.float32).reshape(-1, FRAME_SIZE)
        for frame, line in zip(frames, label.lines, strict=True):
            seen = first.setdefault(frame.tobytes(), (name, line))
            if seen[0] != name:
                raise FrameError(
                    f"{path}: line {line} (label {quoted(name)}) holds the same frame as line {seen[1]} "
                    f"(label {quoted(seen[0])}); each label's frames must show a pose of its own"
                )


@dataclass
class _LabelRows:
    """One label's frames as read (float32, flat) and the CSV line of each."""

    values: array[float] = field(default_factory=lambda: array("f"))
    lines: array[int] = field(default_factory=lambda: array("l"))


def _read_rows(path: Path) -> dict[str, _LabelRows]:
    per_label: dict[str, _LabelRows] = {}
    stored: dict[str, str] = {}  # CSV label -> its stored form, checked once
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            _check_header(path, header)
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                values = _frame_values(path, line, row[1:])
                name = stored.get(row[0])
                if name is None:
                    try:
                        name = stored[row[0]] = clean_gesture_name(row[0])
                    except InvalidName as exc:
                        raise ValueError(f"{path}, line {line}: label {quoted(row[0])}: {exc}") from None
                    twin = lookalike_in(name, [other for other in per_label if other != name])
                    if twin is not None:
                        raise ValueError(
                            f"{path}, line {line}: label {quoted(row[0])} looks the same as the label {quoted(twin)}"
                            " of earlier lines; a model's gestures need names a user can tell apart"
                        )
                label = per_label.setdefault(name, _LabelRows())
                label.values.extend(values)
                label.lines.append(line)
        except csv.Error as exc:
            raise FrameError(f"{path}, line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise FrameError(f"{path}, after line {reader.line_num}: not UTF-8 text ({exc.reason})") from None
    return per_label


def _check_header(path: Path, header: list[str] | None) -> None:
    """The apps' header, `label,0,...,63`: columns named otherwise may hold the values in
    another order (x, y, z grouped, say), which would train a model on scrambled hands."""
    expected = ["label", *(str(i) for i in range(FRAME_SIZE))]
    if header is None or len(header) != len(expected):
        found = "an empty file" if header is None else f"{len(header)} columns" if header else "an empty first line"
        raise FrameError(f"{path}: expected a header 'label,0,...,63' ({len(expected)} columns), found {found}")
    for position, (cell, wanted) in enumerate(zip(header, expected, strict=True)):
        if cell.strip() != wanted:
            raise FrameError(
                f"{path}: header column {position + 1} is {quoted(cell, 20)}, expected {quoted(wanted)}: the "
                "header must be 'label,0,...,63', the 64 values of a frame in the apps' order "
                "(x0, y0, z0, x1, ..., z20, handedness)"
            )


def _frame_values(path: Path, line: int, cells: list[str]) -> list[float]:
    """The row's 64 values, or FrameError naming the line and value as the API names frame and value."""
    if len(cells) != FRAME_SIZE:  # the count first: a row of a million cells is not parsed
        raise FrameError(f"{path}, line {line}: expected 64 numbers (21 landmarks x 3 + handedness), got {len(cells)}")
    values: list[float] = []
    for position, cell in enumerate(cells):
        try:
            values.append(float(cell))
        except ValueError:
            raise FrameError(f"{path}, line {line}, value {position}: not a number ({quoted(cell, 20)})") from None
    problem = frame_problem(line, values)
    if problem:  # "frame {line}, value 63 (handedness): ..." -> "line {line}, value 63 ..."
        raise FrameError(f"{path}, line {line}{problem.removeprefix(f'frame {line}')}")
    return values


def _hand_frames(path: Path, name: str, label: _LabelRows) -> np.ndarray:
    """The label's frames that show a hand; FrameError when fewer than MIN_FRAMES do."""
    frames = np.frombuffer(label.values, dtype=np.float32).reshape(-1, FRAME_SIZE).copy()
    shows = hand_extent(frames) >= MIN_HAND_EXTENT
    blank = [label.lines[i] for i in np.flatnonzero(~shows)]
    n_hand = len(frames) - len(blank)
    where = f"{path}: label {quoted(name)} (first on line {label.lines[0]})"
    if n_hand < MIN_FRAMES:
        message = f"{where}: only {n_hand} of {len(frames)} frames show a hand, need {MIN_FRAMES}"
        if blank:
            have = "has" if len(blank) == 1 else "have"
            message += (
                f"; {_some_lines(blank)} {have} all 21 landmarks within {1000 * MIN_HAND_EXTENT:.0f} mm of each "
                "other (a hand's world landmarks span about 80-200 mm), as when tracking is lost"
            )
        raise FrameError(message)
    problem = layout_problem(frames[shows])
    if problem:
        raise FrameError(f"{where}: {problem}")
    if blank:
        log.warning("%s: left out %s, which show no hand", where, _some_lines(blank))
    return frames[shows]


def _some_lines(lines: Sequence[int], shown: int = 5) -> str:
    """`line 7`, `lines 2, 3, 4, 5, 6 and 95 more`."""
    if len(lines) == 1:
        return f"line {lines[0]}"
    more = f" and {len(lines) - shown} more" if len(lines) > shown else ""
    return "lines " + ", ".join(str(n) for n in lines[:shown]) + more


def even_spread(frames: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `frames`, evenly spaced over them (recording order kept)."""
    if len(frames) <= limit:
        return frames
    return frames[np.linspace(0, len(frames) - 1, limit).round().astype(np.int64)]


def order_labels(
    found: Sequence[str], code: str, explicit: Sequence[str] | None, existing: Sequence[str] | None = None
) -> list[str]:
    """The output order of a base's labels: `explicit` (`--labels`), else base_v1's shipped
    order, else sorted. A base that replaces `existing` (a base of that code) keeps its labels at
    their indices: apps run it and its children extend it."""
    ordered = _ordered(found, code, explicit)
    existing = [stored_form(name) for name in existing] if existing is not None else None  # older bases
    if existing is not None and existing != ordered:
        if set(existing) != set(found):
            change = f"its labels are {', '.join(existing)}; the file has {', '.join(found)}"
        else:
            change = f"its labels are {', '.join(existing)}, in this order (pass --labels {','.join(existing)})"
        raise ValueError(
            f"{code} already exists and {change}; a replacement keeps every label at its index (the apps "
            "running it and the models trained from it rely on them): import other labels under a new --code"
        )
    return ordered


def _ordered(found: Sequence[str], code: str, explicit: Sequence[str] | None) -> list[str]:
    if explicit:
        repeated = sorted({name for name in explicit if list(explicit).count(name) > 1})
        if repeated:
            raise ValueError(f"--labels names each label once; repeated: {', '.join(repeated)}")
        missing = set(explicit) ^ set(found)
        if missing:
            raise ValueError(f"--labels must list exactly the CSV's labels; differing: {sorted(missing)}")
        if code == BASE_CODE and list(explicit) != list(BASE_V1_LABELS):
            # The apps ship this order; another one would swap what every installed app shows.
            raise ValueError(f"{BASE_CODE}'s labels are {', '.join(BASE_V1_LABELS)}, in this order (the apps ship it)")
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
    training = [GestureFrames(name, even_spread(data[name], TRAINING_FRAMES_PER_GESTURE)) for name in labels]
    trained = train_gesture_model(training, config)
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
    """`ghostouch base import`: the CSV's frames checked as a training request's (`read_csv`),
    trained on at most TRAINING_FRAMES_PER_GESTURE per label, all of them stored as its samples."""
    data = read_csv(path)
    labels = [stored_form(name) for name in labels] if labels else labels
    existing = repo.get_model(settings.resolved_database_url, code) if repo.is_valid_code(code) else None
    ordered = order_labels(list(data), code, labels, existing.labels if existing and existing.kind == "base" else None)
    config = MANY_HANDS_CONFIG if many_hands else EngineConfig()
    return create_base(settings, code, data, ordered, f"imported from {path.name}", config)
