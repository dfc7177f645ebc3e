"""Train, export and verify a gesture classifier from each gesture's recorded frames.

Output index i is `gestures[i]`; callers keep parent gestures first and append new ones, which
is what keeps the apps' label maps valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ghostouch.engine import export, negatives
from ghostouch.engine.augment import AugmentConfig, augment
from ghostouch.engine.frames import HANDEDNESS, app_view
from ghostouch.engine.model import TrainConfig, Weights, predict_proba, train_weights
from ghostouch.engine.verify import LiteModel, ModelCheckFailed, agreement, check_legacy_contract

Progress = Callable[[str], None]
MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class GestureFrames:
    name: str
    frames: npt.NDArray[np.float32]  # [n, 64], in recording order


@dataclass(frozen=True)
class EngineConfig:
    samples_per_gesture: int = 300  # augmented training samples per gesture
    holdout_fraction: float = 0.15  # tail of each gesture's frames kept back for the report
    negatives_per_gesture: float = 1.0  # unknown-pose samples per gesture, relative to one gesture
    negative_weight: float = 2.0  # total loss weight of unknown poses, relative to one gesture
    negative_min_distance: float = 1.0  # in units of the gestures' typical spread
    chimera_share: float = 0.2  # of the unknown poses: finger swaps between gestures
    random_share: float = 0.2  # of the unknown poses: random synthetic hands
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedModel:
    labels: list[str]
    weights: Weights
    tflite_uint8: bytes
    tflite_float: bytes
    metrics: dict[str, Any]


def _split(frames: npt.NDArray[np.float32], fraction: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    n_hold = int(len(frames) * fraction) if len(frames) >= 40 else 0
    if n_hold == 0:
        return frames, frames[:0]
    return frames[: len(frames) - n_hold], frames[len(frames) - n_hold :]


def _flatten_depth(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero z, for clients that send 2-D keypoints (every z exactly 0)."""
    out = frames.copy()
    out[:, 2:HANDEDNESS:3] = 0.0
    return out


def _unknown_poses(
    train_sets: list[npt.NDArray[np.float32]], n: int, cfg: EngineConfig, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    frames = np.concatenate(train_sets)
    labels = np.concatenate([np.full(len(s), i) for i, s in enumerate(train_sets)])
    n_random = int(n * cfg.random_share)
    n_chimera = int(n * cfg.chimera_share) if len(train_sets) >= 2 else 0
    # Over-generate: the distance filter drops part of the candidates.
    candidates = [
        negatives.finger_changes(frames, 2 * (n - n_random - n_chimera), rng),
        negatives.finger_chimeras(frames, labels, 2 * n_chimera, rng),
    ]
    if n_random:
        from ghostouch.engine import hands

        candidates.append(hands.random_poses(2 * n_random, rng))
    pool = np.concatenate(candidates)
    spacing = negatives.typical_spacing(frames, labels)
    kept = negatives.far_from(pool, frames, cfg.negative_min_distance * spacing)
    return kept[rng.permutation(len(kept))[:n]]


def build_training_set(
    train_sets: list[npt.NDArray[np.float32]], cfg: EngineConfig, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Inputs (as the apps deliver them), soft targets and sample weights."""
    k = len(train_sets)
    flat = all(not np.any(s[:, 2:HANDEDNESS:3]) for s in train_sets)
    xs, ys, ws = [], [], []
    for label, frames in enumerate(train_sets):
        copies = max(1, int(np.ceil(cfg.samples_per_gesture / len(frames))))
        aug = augment(frames, copies, rng, cfg.augment)
        xs.append(np.concatenate([frames, aug]))
        target = np.zeros((len(xs[-1]), k), np.float32)
        target[:, label] = 1.0
        ys.append(target)
        ws.append(np.full(len(xs[-1]), 1.0 / len(xs[-1]), np.float32))
    n_unknown = int(cfg.negatives_per_gesture * cfg.samples_per_gesture * k)
    if n_unknown and k >= 2:
        unknown = augment(_unknown_poses(train_sets, n_unknown, cfg, rng), 1, rng, cfg.augment)
        if len(unknown):
            xs.append(unknown)
            ys.append(np.full((len(unknown), k), 1.0 / k, np.float32))
            ws.append(np.full(len(unknown), cfg.negative_weight / len(unknown), np.float32))
    x = np.concatenate(xs)
    return app_view(_flatten_depth(x) if flat else x), np.concatenate(ys), np.concatenate(ws)


def confusion(model: LiteModel, sets: list[npt.NDArray[np.float32]]) -> tuple[list[list[int]], list[float | None]]:
    k = len(sets)
    matrix = [[0] * (k + 1) for _ in range(k)]  # last column: below 0.5, "no gesture"
    for label, frames in enumerate(sets):
        if len(frames) == 0:
            continue
        proba = model.predict_proba(frames)
        top = np.argmax(proba, axis=1)
        for t, p in zip(top, proba.max(axis=1), strict=True):
            matrix[label][int(t) if p >= 0.5 else k] += 1
    per_class = [row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]
    return matrix, per_class


def train_gesture_model(
    gestures: list[GestureFrames], cfg: EngineConfig | None = None, progress: Progress | None = None
) -> TrainedModel:
    """Train on every gesture's frames, export both TFLite variants and verify the legacy one."""
    cfg = cfg or EngineConfig()
    report = progress or (lambda _step: None)
    if not gestures:
        raise ValueError("a model needs at least one gesture")
    rng = np.random.default_rng(cfg.seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    report("training the model")
    splits = [_split(g.frames, cfg.holdout_fraction) for g in gestures]
    train_sets = [s[0] for s in splits]
    x, y, w = build_training_set(train_sets, cfg, rng)
    weights = train_weights(x, y, w, cfg.train)
    timings["train_s"] = time.perf_counter() - t0

    report("exporting the TensorFlow Lite model")
    t1 = time.perf_counter()
    originals = np.concatenate([g.frames for g in gestures])
    tflite_uint8 = export.export_uint8(weights, originals)
    tflite_float = export.export_float(weights)
    timings["export_s"] = time.perf_counter() - t1

    report("verifying the exported model")
    t2 = time.perf_counter()
    lite = LiteModel.load(tflite_uint8)
    check_legacy_contract(lite, len(gestures))
    float_proba = predict_proba(weights, app_view(originals))
    agree = agreement(lite, originals, float_proba)
    if agree < MIN_AGREEMENT:
        raise ModelCheckFailed(
            f"the quantized model agrees with the trained one on only {agree:.1%} of frames (need {MIN_AGREEMENT:.0%})"
        )
    float_model = LiteModel.load(tflite_float)
    float_agree = agreement(float_model, originals, float_proba)
    matrix, per_class = confusion(lite, [s[1] for s in splits])
    timings["verify_s"] = time.perf_counter() - t2

    metrics: dict[str, Any] = {
        "labels": [g.name for g in gestures],
        "uint8_agreement": agree,
        "float_variant_agreement": float_agree,
        "input_quantization": {"scale": lite.input_quant[0], "zero_point": lite.input_quant[1]},
        "holdout_per_class_accuracy": dict(zip([g.name for g in gestures], per_class, strict=True)),
        "holdout_confusion": {
            "rows": [g.name for g in gestures],
            "columns": [*[g.name for g in gestures], "no gesture"],
            "matrix": matrix,
        },
        "training_frames": {g.name: len(s) for g, s in zip(gestures, train_sets, strict=True)},
        "training_samples": len(x),
        "timings": timings,
    }
    return TrainedModel([g.name for g in gestures], weights, tflite_uint8, tflite_float, metrics)
