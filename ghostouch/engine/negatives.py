"""Poses that are none of the model's gestures, used to teach it to stay below 0.5 on them.

Two sources: finger-swap chimeras of the gestures' own frames (realistic hands that are
"almost" a known gesture) and random hands from the synthetic generator. Candidates that come
too close to any gesture's frames, in normalized pose space, are dropped so that they never
contradict a real gesture.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ghostouch.engine.augment import FINGERS
from ghostouch.engine.frames import HANDEDNESS, landmarks, normalize


def finger_chimeras(
    frames: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], n: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Hands whose fingers come from frames of different gestures (and random flexion blends)."""
    if len(np.unique(labels)) < 2:
        return np.empty((0, 64), np.float32)
    a_idx = rng.integers(0, len(frames), n)
    b_idx = rng.integers(0, len(frames), n)
    keep = labels[a_idx] != labels[b_idx]
    a_idx, b_idx = a_idx[keep], b_idx[keep]
    normal_a = normalize(frames[a_idx], mirror_left=False)
    normal_b = normalize(frames[b_idx], mirror_left=False)
    pts = normal_a.reshape(-1, 21, 3).copy()
    other = normal_b.reshape(-1, 21, 3)
    for i in range(len(pts)):
        swapped = rng.choice(5, size=rng.integers(1, 4), replace=False)
        for f in swapped:
            finger = FINGERS[f]
            root_a, root_b = pts[i, finger[0]], other[i, finger[0]]
            pts[i, finger[1:]] = root_a + (other[i, finger[1:]] - root_b)
    out = np.zeros((len(pts), 64), np.float32)
    # Back to metres at a typical hand size (normalize() made the RMS coordinate 1).
    out[:, :HANDEDNESS] = pts.reshape(-1, HANDEDNESS) * 0.035
    out[:, HANDEDNESS] = frames[a_idx, HANDEDNESS]
    return out


def far_from(
    candidates: npt.NDArray[np.float32], references: npt.NDArray[np.float32], min_distance: float
) -> npt.NDArray[np.float32]:
    """Candidates whose normalized pose is at least `min_distance` from every reference frame."""
    if len(candidates) == 0:
        return candidates
    cand = normalize(candidates)
    ref = normalize(references)
    d2 = (cand**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2.0 * cand @ ref.T
    nearest = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return candidates[nearest >= min_distance]


def typical_spacing(frames: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    """Median distance from a gesture frame to the farthest-but-typical frame of its own gesture."""
    feats = normalize(frames)
    spreads = []
    for label in np.unique(labels):
        f = feats[labels == label]
        centre = f.mean(axis=0)
        spreads.append(float(np.percentile(np.linalg.norm(f - centre, axis=1), 90)))
    return float(np.median(spreads))


def landmark_noise(frames: npt.NDArray[np.float32]) -> float:
    """Median per-landmark spread (m) across frames; a rough scale of recording jitter."""
    pts = landmarks(frames)
    return float(np.median(np.std(pts, axis=0)))
