"""Train, export and verify a gesture classifier from each gesture's recorded frames.

Output index i is `gestures[i]`; callers keep parent gestures first and append new ones, which
is what keeps the apps' label maps valid.

The training set: every gesture's frames plus augmented copies (turns, finger bends, finger
lengths, depth, noise; `augment.py`), and "unknown" hands trained towards the uniform output
so that the app shows "no gesture" for poses it was never taught (`negatives.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from ghostouch.engine import export, negatives, twins
from ghostouch.engine import gate as gating
from ghostouch.engine.augment import AugmentConfig, augment, flatten_depth, is_flat
from ghostouch.engine.features import DEFAULT_KINDS, FLAT_KINDS, FLAT_SHAPE_KINDS
from ghostouch.engine.frames import HANDEDNESS, app_view
from ghostouch.engine.model import TrainConfig, Weights, predict_proba, train_weights
from ghostouch.engine.verify import LiteModel, ModelCheckFailed, agreement, check_float_contract, check_legacy_contract

Progress = Callable[[str], None]
Frames = npt.NDArray[np.float32]
PoseFilter = Callable[[Frames], npt.NDArray[np.bool_]]
MIN_AGREEMENT = 0.99
# The float variant's int8 weights move probabilities a little, which flips frames that sit near
# 0.5 or between two names of one pose: 98.1 % on tests/test_engine_training.py's model of three
# poses taught four times each (allow_duplicate). A wrong export (outputs in another order) lands
# far below (tests/test_verify.py).
MIN_FLOAT_AGREEMENT = 0.95


@dataclass(frozen=True)
class GestureFrames:
    name: str
    frames: Frames  # [n, 64], in recording order


@dataclass(frozen=True)
class EngineConfig:
    samples_per_gesture: int = 300  # augmented training samples per gesture
    holdout_fraction: float = 0.15  # tail of each gesture's frames kept back for the report
    negatives_per_gesture: float = 1.0  # unknown-pose samples per gesture, relative to one gesture
    negative_weight: float = 2.0  # total loss weight of unknown poses, relative to one gesture
    negative_min_distance: float = 1.0  # hand-shape distance, in units of the gestures' spread
    # ... and at least this far (shape units, `negatives.shape`) from every recorded frame: one
    # recording shows less variety than the same pose made later or by another hand (typically
    # 1.5-3.5 away on the benchmark's recordings, while different gestures are 6 and more).
    negative_min_shape: float = 2.5
    chimera_share: float = 0.2  # of the unknown poses: digits swapped between gestures
    random_share: float = 0.2  # of the unknown poses: random synthetic hands
    # Soft targets for the gestures too (0.8 + 0.2 / k): lower confidence on the borders of a
    # gesture. On the benchmark it cut never-trained gestures shown as a gesture by 2-6 points.
    label_smoothing: float = 0.2
    check_frames_per_gesture: int = 60  # frames per gesture (and as many mirrored) checked
    # Stray frames of a recording (a hand still on its way into the pose, a tracking glitch) are
    # left out of training: frames whose 10th nearest frame of the same recording (hand shape) is
    # this many times farther than a typical frame's; 0: keep all. Two open-hand frames in a
    # kinivi "Close" recording otherwise made the model show every open hand as Close.
    stray_factor: float = 3.0
    # Models of 2-D keypoint recordings (3 gestures or more) get the familiarity gate (gate.py).
    gate_2d: bool = True
    gate_radius: float = gating.RADIUS  # in spreads of a gesture's augmented copies
    # ... and so do world-landmark models, with their own radius, unless the gestures were
    # learned from many people's hands (bases.MANY_HANDS_CONFIG).
    gate_3d: bool = True
    gate_radius_3d: float = gating.RADIUS_3D
    # A child leaves out the unknown poses its parent shows as one of the gestures they
    # share: where the parent answered a gesture, so does the child (`ParentModel`).
    keep_parent_answers: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParentModel:
    """The model a child is trained from, as the phone runs it. Incremental learning must not
    take from the old gestures what the parent recognized: an unknown pose drawn for the child
    (often from the new gesture's frames with a finger moved) can land where the parent shows
    an old gesture, and the child then turns that old gesture's later frames to "no gesture".
    On the accuracy bench's Libras runs that cost the old gestures 2 points (98.6 % with the
    base model, 96.7 % after the increments, all of it "no gesture")."""

    lite: LiteModel
    labels: list[str]
    # Gestures whose answers the child need not keep: one being refined with new frames may be
    # narrowed by them.
    not_kept: frozenset[str] = frozenset()

    def shows(self, frames: Frames, labels: list[str]) -> npt.NDArray[np.bool_]:
        """Which frames the parent shows as one of `labels` (top probability >= 0.5). A model of
        two gestures cannot say "no gesture" (one of two always has half), so it shows none;
        nor does a file whose outputs do not match its labels."""
        k = len(self.labels)
        if k < 3 or len(frames) == 0 or self.lite.n_outputs != k:
            return np.zeros(len(frames), bool)
        proba = self.lite.predict_proba(frames)
        shared = np.array([name in labels and name not in self.not_kept for name in self.labels])
        return (proba.max(axis=1) >= 0.5) & shared[proba.argmax(axis=1)]


@dataclass
class TrainedModel:
    labels: list[str]
    weights: Weights
    tflite_uint8: bytes
    tflite_float: bytes
    metrics: dict[str, Any]
    gate: gating.Gate | None = None  # "no gesture" far from every recording (gate.py)


def holdout_split(frames: Frames, fraction: float) -> tuple[Frames, Frames]:
    n_hold = int(len(frames) * fraction) if len(frames) >= 40 else 0
    if n_hold == 0:
        return frames, frames[:0]
    return frames[: len(frames) - n_hold], frames[len(frames) - n_hold :]


def mirrored(frames: Frames) -> Frames:
    """The same poses made with the other hand: x negated, handedness flipped."""
    out = np.array(frames, dtype=np.float32, copy=True)
    out[:, 0:HANDEDNESS:3] *= -1.0
    out[:, HANDEDNESS] = np.where(out[:, HANDEDNESS] >= 0.5, 0.0, 1.0)
    return out


def trim_strays(frames: Frames, factor: float, neighbours: int = 10, max_share: float = 0.1) -> Frames:
    """`frames` without the isolated ones (at most `max_share` of them): those whose
    `neighbours`-th nearest other frame is `factor` times farther than the median frame's."""
    if factor <= 0 or len(frames) < 4 * neighbours:
        return frames
    shapes = negatives.shape(frames)
    isolation = negatives.kth_nearest_distance(shapes, shapes, neighbours + 1)  # +1: itself
    limit = max(factor * float(np.median(isolation)), float(np.quantile(isolation, 1.0 - max_share)))
    return frames[isolation <= limit]


def _unknown_poses(
    train_sets: list[Frames], n: int, cfg: EngineConfig, rng: np.random.Generator, parent_shows: PoseFilter | None
) -> Frames:
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
    shapes = negatives.shape(frames)
    spacing = negatives.typical_spacing(frames, labels, shapes)
    threshold = max(cfg.negative_min_distance * spacing, cfg.negative_min_shape)
    kept = negatives.far_from(pool, frames, threshold, shapes)
    if parent_shows is not None and len(kept):
        left = kept[~parent_shows(flatten_depth(kept) if is_flat(frames) else kept)]
        # A parent that shows most candidates as a gesture would leave the child few "no
        # gesture" samples, each weighing much: then its answers are not kept.
        if len(left) >= min(n, len(kept)) // 2:
            kept = left
    return kept[rng.permutation(len(kept))[:n]]


def build_training_set(
    train_sets: list[Frames],
    cfg: EngineConfig,
    rng: np.random.Generator,
    twin_pairs: list[tuple[int, int]] | None = None,
    parent_shows: PoseFilter | None = None,
) -> tuple[Frames, Frames, Frames]:
    """Inputs (as the apps deliver them), soft targets and sample weights. `twin_pairs`:
    gestures that differ only by orientation (default: `twins.orientation_twins`);
    `parent_shows`: which candidate unknown poses the parent model shows as a kept gesture."""
    k = len(train_sets)
    flat = all(is_flat(s) for s in train_sets)
    varied: list[list[Frames]] = [[s] for s in train_sets]  # what the augmentation starts from
    if twin_pairs is None:
        twin_pairs = twins.orientation_twins(train_sets) if k >= 2 else []
    for i, j in twin_pairs:
        varied[i].append(twins.reoriented(train_sets[j], train_sets[i], len(train_sets[i]), rng))
        varied[j].append(twins.reoriented(train_sets[i], train_sets[j], len(train_sets[j]), rng))
    xs, ys, ws = [], [], []
    for label, frames in enumerate(train_sets):
        start = np.concatenate(varied[label])
        copies = max(1, int(np.ceil(cfg.samples_per_gesture / len(start))))
        aug = augment(start, copies, rng, cfg.augment)
        xs.append(np.concatenate([frames, aug]))
        target = np.full((len(xs[-1]), k), cfg.label_smoothing / k, np.float32)
        target[:, label] += 1.0 - cfg.label_smoothing
        ys.append(target)
        ws.append(np.full(len(xs[-1]), 1.0 / len(xs[-1]), np.float32))
    n_unknown = int(cfg.negatives_per_gesture * cfg.samples_per_gesture * k)
    if n_unknown and k >= 2:
        unknown = augment(_unknown_poses(train_sets, n_unknown, cfg, rng, parent_shows), 1, rng, cfg.augment)
        if len(unknown):
            xs.append(unknown)
            ys.append(np.full((len(unknown), k), 1.0 / k, np.float32))
            ws.append(np.full(len(unknown), cfg.negative_weight / len(unknown), np.float32))
    x = np.concatenate(xs)
    return app_view(flatten_depth(x) if flat else x), np.concatenate(ys), np.concatenate(ws)


def _per_gesture_sample(sets: list[Frames], limit: int, rng: np.random.Generator) -> Frames:
    picks = [s[rng.permutation(len(s))[:limit]] for s in sets if len(s)]
    return np.concatenate(picks)


def confusion(model: LiteModel, sets: list[Frames]) -> tuple[list[list[int]], list[float | None]]:
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
    gestures: list[GestureFrames],
    cfg: EngineConfig | None = None,
    progress: Progress | None = None,
    parent: ParentModel | None = None,
) -> TrainedModel:
    """Train on every gesture's frames, export both TFLite variants and verify the legacy one.
    `parent`: the model this one extends (the child keeps its answers, `ParentModel`)."""
    cfg = cfg or EngineConfig()
    report = progress or (lambda _step: None)
    if not gestures:
        raise ValueError("a model needs at least one gesture")
    empty = [g.name for g in gestures if len(g.frames) == 0]
    if empty:
        raise ValueError(f"gestures without frames: {', '.join(empty)}")
    rng = np.random.default_rng(cfg.seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    report("training the model")
    splits = [holdout_split(g.frames, cfg.holdout_fraction) for g in gestures]
    train_sets = [trim_strays(s[0], cfg.stray_factor) for s in splits]
    twin_pairs = twins.orientation_twins(train_sets) if len(train_sets) >= 2 else []
    names = [g.name for g in gestures]
    flat = all(is_flat(s) for s in train_sets)
    gated = (cfg.gate_2d if flat else cfg.gate_3d) and len(gestures) >= 3
    # Every child keeps its parent's answers, gated or not. Without the gate (many people's
    # hands) the parent also shows some never-taught poses as its gestures, and the child then
    # does too, as often as its parent did; without this, teaching one gesture to the synthetic
    # base_v1 turned 7 points of real base_v1 frames to "no gesture" (bench/RESULTS.md, "The
    # default lineage on real frames").
    parent_shows = None
    if parent is not None and cfg.keep_parent_answers:
        parent_shows = partial(parent.shows, labels=names)
    x, y, w = build_training_set(train_sets, cfg, rng, twin_pairs, parent_shows)
    # 2-D keypoints (every z = 0) get the pose embedding among the features (features.py).
    kinds = (FLAT_KINDS if twin_pairs else FLAT_SHAPE_KINDS) if flat else DEFAULT_KINDS
    weights = train_weights(x, y, w, cfg.train, kinds)
    radius = cfg.gate_radius if flat else cfg.gate_radius_3d
    gate = gating.build(train_sets, rng, radius, cfg.augment) if gated else None
    timings["train_s"] = time.perf_counter() - t0

    report("exporting the TensorFlow Lite model")
    t1 = time.perf_counter()
    recorded = [g.frames for g in gestures]
    tflite_uint8 = export.export_uint8(weights, gate)
    tflite_float = export.export_float(weights, gate)
    timings["export_s"] = time.perf_counter() - t1

    report("verifying the exported model")
    t2 = time.perf_counter()
    lite = LiteModel.load(tflite_uint8)
    check_legacy_contract(lite, len(gestures))
    # Recorded frames of every gesture, as made with either hand.
    check = _per_gesture_sample(recorded, cfg.check_frames_per_gesture, rng)
    check = np.concatenate([check, mirrored(check)])
    float_proba = predict_proba(weights, app_view(check), gate)
    agree = agreement(lite, check, float_proba)
    if agree < MIN_AGREEMENT:
        raise ModelCheckFailed(
            f"the quantized model agrees with the trained one on only {agree:.1%} of frames (need {MIN_AGREEMENT:.0%})"
        )
    float_lite = LiteModel.load(tflite_float)
    check_float_contract(float_lite, len(gestures))
    float_agree = agreement(float_lite, check, float_proba)
    if float_agree < MIN_FLOAT_AGREEMENT:
        raise ModelCheckFailed(
            f"the float variant agrees with the trained model on only {float_agree:.1%} of frames "
            f"(need {MIN_FLOAT_AGREEMENT:.0%})"
        )
    matrix, per_class = confusion(lite, [s[1] for s in splits])
    timings["verify_s"] = time.perf_counter() - t2

    metrics: dict[str, Any] = {
        "labels": names,
        "uint8_agreement": agree,
        "float_variant_agreement": float_agree,
        "input_quantization": {"scale": lite.input_quant[0], "zero_point": lite.input_quant[1]},
        "holdout_per_class_accuracy": dict(zip(names, per_class, strict=True)),
        "holdout_confusion": {"rows": names, "columns": [*names, "no gesture"], "matrix": matrix},
        "training_frames": {g.name: len(s) for g, s in zip(gestures, train_sets, strict=True)},
        "training_samples": len(x),
        "features": list(kinds),
        "orientation_twins": [[names[i], names[j]] for i, j in twin_pairs],
        "familiarity_gate": gate is not None,
        "timings": timings,
    }
    return TrainedModel(names, weights, tflite_uint8, tflite_float, metrics, gate)
