"""Poses that are none of the model's gestures, used to teach it to stay below 0.5 on them.

Three sources: the gestures' own frames with one to three fingers put in a clearly different
state (curled instead of straight, straight instead of curled, thumb moved elsewhere), which
are the "almost a known gesture" hands an app meets most; finger-swap chimeras between
gestures; and random hands from the synthetic generator. Candidates that come
too close to any gesture's frames, in hand-shape space (`shape`), are dropped so that they never
contradict a real gesture.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ghostouch.engine.augment import (
    AugmentConfig,
    augment,
    bend,
    finger_curl,
    flatten_depth,
    is_flat,
    mirrored_points,
    palm_axes,
    set_finger,
    to_frames,
)
from ghostouch.engine.features import KEY_PAIRS
from ghostouch.engine.frames import FINGERS, MIN_MEAN_SQUARE, landmarks

# Flexion (MCP, PIP, DIP; degrees) ranges of finger states, and the curl that separates them.
OPEN = ((-10.0, 25.0), (0.0, 25.0), (0.0, 20.0))
CLOSED = ((45.0, 90.0), (60.0, 105.0), (20.0, 70.0))
HOOK = ((-10.0, 20.0), (75.0, 105.0), (30.0, 70.0))
HALF = ((20.0, 50.0), (30.0, 70.0), (10.0, 40.0))
CURLED_DEG = 60.0
_PAIR_INDEX = np.asarray(KEY_PAIRS).T


def _draw(ranges: tuple[tuple[float, float], ...], n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    return np.stack([rng.uniform(lo, hi, n) for lo, hi in ranges], axis=1)


def finger_changes(frames: npt.NDArray[np.float32], n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Frames of the gestures with 1-3 digits moved to a clearly different state."""
    if len(frames) == 0 or n == 0:
        return np.empty((0, 64), np.float32)
    base = frames[rng.integers(0, len(frames), n)]
    pts, sign = mirrored_points(base)
    chosen = _pick_digits(n, rng)
    for f in range(1, 5):
        rows = np.flatnonzero(chosen[:, f])
        if len(rows) == 0:
            continue
        sub = pts[rows]
        curled = finger_curl(sub, f) >= CURLED_DEG
        target = np.where(curled[:, None], _draw(OPEN, len(rows), rng), _draw(CLOSED, len(rows), rng))
        # Some straight fingers get hooked instead of curled; some fingers only half bent.
        pick = rng.random(len(rows))
        hook = (~curled) & (pick < 0.25)
        target[hook] = _draw(HOOK, int(hook.sum()), rng)
        half = pick >= 0.7
        target[half] = _draw(HALF, int(half.sum()), rng)
        set_finger(sub, f, target)
        pts[rows] = sub
    rows = np.flatnonzero(chosen[:, 0])
    if len(rows):
        sub = pts[rows]
        distal, lateral, palmar = palm_axes(sub)
        # Swing the thumb 40-90 deg across, away from or out of the palm (or twist it, when the
        # random axis runs along it), then bend it a little.
        w = rng.normal(size=(len(rows), 3))
        axis = w[:, :1] * distal + w[:, 1:2] * lateral + w[:, 2:] * palmar
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)
        bend(sub, 1, (2, 3, 4), axis, np.radians(rng.uniform(40.0, 90.0, len(rows))))
        bend(sub, 2, (3, 4), lateral, np.radians(rng.uniform(-20.0, 50.0, len(rows))))
        pts[rows] = sub
    return to_frames(pts, sign, base)


def _pick_digits(n: int, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """[n, 5] masks of 1-3 distinct digits per hand (one digit most often)."""
    k = rng.choice([1, 1, 2, 3], size=n)
    chosen = np.zeros((n, 5), bool)
    order = np.argsort(rng.random((n, 5)), axis=1)
    for j in range(3):
        chosen[np.arange(n), order[:, j]] |= k > j
    return chosen


def finger_chimeras(
    frames: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], n: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Hands of one gesture with 1-3 digits taken over from a frame of another gesture: each
    transplanted digit keeps its pose relative to its own palm."""
    if len(np.unique(labels)) < 2 or n == 0:
        return np.empty((0, 64), np.float32)
    a_idx = rng.integers(0, len(frames), n)
    b_idx = rng.integers(0, len(frames), n)
    keep = labels[a_idx] != labels[b_idx]
    a_idx, b_idx = a_idx[keep], b_idx[keep]
    pts, sign = mirrored_points(frames[a_idx])
    other, _ = mirrored_points(frames[b_idx])
    scale = np.sqrt(np.mean((pts - pts.mean(axis=1, keepdims=True)) ** 2, axis=(1, 2)))
    scale_b = np.sqrt(np.mean((other - other.mean(axis=1, keepdims=True)) ** 2, axis=(1, 2)))
    to_a = np.stack(palm_axes(pts), axis=2)  # columns: distal, lateral, palmar
    from_b = np.stack(palm_axes(other), axis=2)
    ratio = (scale / np.maximum(scale_b, 1e-9))[:, None, None]
    chosen = _pick_digits(len(pts), rng)
    for f, finger in enumerate(FINGERS):
        rows = np.flatnonzero(chosen[:, f])
        tail = list(finger[1:])
        local = np.einsum("nkj,nji->nki", other[rows][:, tail] - other[rows][:, finger[:1]], from_b[rows])
        moved = np.einsum("nki,nji->nkj", local, to_a[rows]) * ratio[rows]
        pts[rows[:, None], tail] = pts[rows][:, finger[:1]] + moved
    return to_frames(pts, sign, frames[a_idx])


def shape(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Orientation-free hand shape: distances between the key points of `features.KEY_POINTS`,
    in units of the hand's RMS size (the model's `distances` features, in NumPy)."""
    pts = landmarks(frames)
    centred = pts - pts.mean(axis=1, keepdims=True)
    size = np.sqrt(np.maximum(np.mean(centred * centred, axis=(1, 2)), MIN_MEAN_SQUARE))
    a, b = _PAIR_INDEX
    diff = pts[:, a] - pts[:, b]
    return np.asarray(np.sqrt(np.sum(diff * diff, axis=2)) / size[:, None], dtype=np.float32)


def kth_nearest_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """For each row of `a`, the Euclidean distance to its k-th nearest row of `b` (all of `b`
    when it has fewer rows)."""
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    k = min(k, d2.shape[1])
    kth = d2.min(axis=1) if k == 1 else np.partition(d2, k - 1, axis=1)[:, k - 1]
    return np.asarray(np.sqrt(np.maximum(kth, 0.0)))


def nearest_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """For each row of `a`, the Euclidean distance to the nearest row of `b`."""
    return kth_nearest_distance(a, b, 1)


def far_from(
    candidates: npt.NDArray[np.float32],
    references: npt.NDArray[np.float32],
    min_distance: float,
    reference_shapes: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Candidates whose hand shape is at least `min_distance` from every reference frame's."""
    if len(candidates) == 0:
        return candidates
    ref = shape(references) if reference_shapes is None else reference_shapes
    return candidates[nearest_distance(shape(candidates), ref) >= min_distance]


Description = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
Spread = tuple[npt.NDArray[np.float32], float]  # a recording's descriptions, and its spread


def augmented_spread(
    frames: npt.NDArray[np.float32],
    describe: Description,
    rng: np.random.Generator,
    neighbours: int,
    augmentation: AugmentConfig | None = None,
) -> Spread:
    """The frames' descriptions, and how far the engine's augmented copies of them (other angles,
    bends, finger lengths, noise; flattened like the frames when those are 2-D keypoints) lie from
    them: the 90th percentile of the copies' distance to their `neighbours`-th nearest frame.
    `augmentation`: the engine's (default: `AugmentConfig()`)."""
    copies = augment(frames, SPREAD_COPIES, rng, augmentation)
    if is_flat(frames):
        copies = flatten_depth(copies)
    reference = describe(frames)
    spread = float(np.percentile(kth_nearest_distance(describe(copies), reference, neighbours), 90))
    return reference, max(spread, 1e-6)


def shape_spread(frames: npt.NDArray[np.float32], seed: int = 0) -> Spread:
    """`augmented_spread` in hand-shape space (`shape`, `shape_distance`)."""
    return augmented_spread(frames, shape, np.random.default_rng(seed), SPREAD_NEIGHBOURS)


def spread_ratio(shapes: npt.NDArray[np.float32], recording: Spread) -> float:
    """Median `shape_distance` of hand shapes to a recording, in units of its `shape_spread`."""
    reference, spread = recording
    return float(np.median(shape_distance(shapes, reference))) / spread


def shape_distance(shapes: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Distance of each hand shape to a recording's shapes: to its SPREAD_NEIGHBOURS-th nearest
    one, so that a few stray frames in the recording (a hand still opening into the pose, say)
    do not make other poses look close to it."""
    return kth_nearest_distance(shapes, reference, SPREAD_NEIGHBOURS)


SPREAD_COPIES = 4
SPREAD_NEIGHBOURS = 10


def typical_spacing(
    frames: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], shapes: npt.NDArray[np.float32] | None = None
) -> float:
    """Median over gestures of the 90th-percentile distance of a frame's shape to its gesture's
    mean shape: how far apart frames of one gesture typically are."""
    feats = shape(frames) if shapes is None else shapes
    spreads = []
    for label in np.unique(labels):
        f = feats[labels == label]
        spreads.append(float(np.percentile(np.linalg.norm(f - f.mean(axis=0), axis=1), 90)))
    return float(np.median(spreads))
