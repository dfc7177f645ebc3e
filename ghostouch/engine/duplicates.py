"""Is a new recording a gesture the parent model already knows?

Two questions, both must say yes:

1. Would the user's phone already take the new pose for an existing gesture? The parent's
   exported model runs on the new frames exactly as the app runs it; when most of them are
   confidently recognized as one existing gesture, that gesture is the candidate.
2. Is it the same hand shape, or only a neighbouring one the parent has never seen? The new
   frames' distance to the candidate's recorded frames (orientation-free hand shape,
   `negatives.shape`) is compared with how far the candidate's own plausible variations reach:
   the engine's augmentation of its frames (other angles, finger bends and lengths, noise),
   i.e. what the trained model accepts as that gesture anyway.

On the accuracy benchmark (bench/accuracy.py) the parent model alone also refused genuinely new
gestures that it takes for a neighbouring one (B for C in Libras, OK for Open): 20-55 % of them.
Measured with the distance to the 10th nearest frame (`negatives.shape_distance`; the nearest one
let a few stray open-hand frames in a kinivi "Close" recording pass Open off as Close),
re-recordings of a gesture lie 0.4-1.1 spreads from it and those new gestures 1.13-3.2. The
ratio the engine used before, distance to the gesture over its distance to the other gestures,
overlapped (0.1-0.7 against 0.4-1.0).

3. For world landmarks, is it held the same way? The hand shape ignores orientation, and a
   parent that knows only thumbs-up takes thumbs-down for it too (the shape is the same, and
   nothing taught it to look at orientation), so that question alone refused every orientation
   twin. The palm's orientation is compared the same way as the shape: the new frames' distance
   to the candidate's, in units of how far the augmentation (turns of up to 75 deg in the image,
   40 deg in depth) moves them. On generator recordings (canonical orientations, 15 draws of each
   pose) a re-recording of the same pose by the same hand lies at most 0.41 spreads away, the
   twins (thumbs up / down, pointing left / right) 1.69 or more. 2-D keypoints skip this
   question: seen flat, the palm's facing is ambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ghostouch.engine import negatives
from ghostouch.engine.augment import is_flat, mirrored_points, palm_axes
from ghostouch.engine.frames import is_right
from ghostouch.engine.verify import LiteModel

Frames = npt.NDArray[np.float32]

# Share of the new frames that must be recognized (top probability >= 0.5) as one existing
# gesture for the recording to be a candidate duplicate of it. Re-recordings of a known gesture
# score 0.65-1.0 on the benchmark; below 0.7 the parent itself mostly shows something else.
DUPLICATE_SHARE = 0.7
RECOGNIZED_PROBABILITY = 0.5
# Largest median distance of the new frames to the candidate's, in units of its spread (the 90th
# percentile distance of its augmented copies to its frames), for the same hand shape.
MAX_SPREAD_RATIO = 1.15
# Largest median distance of the new frames' palm orientation to the candidate's, in units of
# how far the augmentation turns them: beyond it, the pose is held another way (a twin).
MAX_ORIENTATION_RATIO = 1.0
# Frames of the candidate compared with: all of them up to this many, else the newest
# `NEWEST_KEPT` and an even spread over the older ones (the distance matrices grow with the
# square of the count: 8000 frames cost 2 GB and 5 s).
MAX_REFERENCE_FRAMES = 2000
NEWEST_KEPT = 400


@dataclass(frozen=True)
class DuplicateVerdict:
    is_duplicate: bool
    gesture: str | None  # the existing gesture most frames were taken for
    similarity: float  # share of new frames recognized as that gesture
    mean_probability: float  # its mean probability over the new frames
    shares: dict[str, float]  # share of frames recognized as each existing gesture
    spread_ratio: float | None = None  # hand-shape distance to that gesture, in its spreads
    orientation_ratio: float | None = None  # palm-orientation distance, in its spreads (3-D only)
    # The new frames by one hand, that gesture's by the other (80 % or more each; a base of many
    # people's hands holds both): a left hand is compared as
    # the mirror image of a right one, so what points or faces the other way with the other hand
    # is this gesture (a left hand pointing left is a right hand pointing right, mirrored).
    other_hand: bool | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "is_duplicate": self.is_duplicate,
            "existing_gesture": self.gesture,
            "similarity": round(self.similarity, 4),
            "mean_probability": round(self.mean_probability, 4),
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
            "spread_ratio": None if self.spread_ratio is None else round(self.spread_ratio, 4),
            "orientation_ratio": None if self.orientation_ratio is None else round(self.orientation_ratio, 4),
            "other_hand": self.other_hand,
        }


def spread_ratio(new: Frames, gesture: Frames, seed: int = 0) -> float:
    """Median distance of `new` frames to `gesture`'s frames (hand shape), in units of
    how far `gesture`'s augmented copies lie from its frames (`negatives.shape_spread`)."""
    if len(gesture) == 0 or len(new) == 0:
        return float("inf")
    return negatives.spread_ratio(negatives.shape(new), negatives.shape_spread(gesture, seed))


def palm_orientation(frames: Frames) -> Frames:
    """[n, 9]: each frame's palm axes (`augment.palm_axes`, left hands mirrored) as one rotation
    matrix, flattened; the Euclidean distance of two rows grows with the angle between them."""
    distal, lateral, palmar = palm_axes(mirrored_points(frames)[0])
    return np.concatenate([distal, lateral, palmar], axis=1).astype(np.float32)


def orientation_ratio(new: Frames, gesture: Frames, seed: int = 0) -> float | None:
    """Median distance of `new` frames' palm orientation to `gesture`'s, in units of how far the
    engine's augmentation turns `gesture`'s frames; None for 2-D keypoints."""
    if len(gesture) == 0 or len(new) == 0 or is_flat(new) or is_flat(gesture):
        return None
    reference, spread = negatives.augmented_spread(
        gesture, palm_orientation, np.random.default_rng(seed), negatives.SPREAD_NEIGHBOURS
    )
    distances = negatives.kth_nearest_distance(palm_orientation(new), reference, negatives.SPREAD_NEIGHBOURS)
    return float(np.median(distances)) / spread


def bounded_reference(frames: Frames, limit: int = MAX_REFERENCE_FRAMES) -> Frames:
    """`frames` (oldest first), or at most `limit` of them: the newest `NEWEST_KEPT` and an even
    spread over the rest."""
    if len(frames) <= limit:
        return frames
    older = frames[:-NEWEST_KEPT]
    picked = np.linspace(0, len(older) - 1, limit - NEWEST_KEPT).round().astype(int)
    return np.concatenate([older[picked], frames[-NEWEST_KEPT:]])


def check_duplicate(
    parent: LiteModel,
    labels: list[str],
    frames: Frames,
    known: Mapping[str, Frames] | None = None,
    ignore: str | None = None,
    share: float = DUPLICATE_SHARE,
    max_spread_ratio: float = MAX_SPREAD_RATIO,
    max_orientation_ratio: float = MAX_ORIENTATION_RATIO,
) -> DuplicateVerdict:
    """Compare the new frames with the parent's gestures (all but `ignore`, a refined gesture).

    `known` holds the parent gestures' recorded frames (only the closest gesture's are read);
    without it only the parent model's opinion counts (question 1 of the module docstring).
    """
    proba = parent.predict_proba(frames)[:, : len(labels)]
    top = np.argmax(proba, axis=1)
    confident = proba.max(axis=1) >= RECOGNIZED_PROBABILITY
    shares = {name: float(np.mean(confident & (top == i))) for i, name in enumerate(labels)}
    candidates = {k: v for k, v in shares.items() if k != ignore}
    if not candidates:
        return DuplicateVerdict(False, None, 0.0, 0.0, shares)
    best = max(candidates, key=lambda k: candidates[k])
    mean_p = float(np.mean(proba[:, labels.index(best)]))
    duplicate = candidates[best] >= share
    ratio = turn = other_hand = None
    if duplicate and known is not None and best in known:
        reference = bounded_reference(known[best])
        ratio = spread_ratio(frames, reference)
        turn = orientation_ratio(frames, reference)
        duplicate = ratio <= max_spread_ratio and (turn is None or turn <= max_orientation_ratio)
        other_hand = _one_hand_each(float(np.mean(is_right(frames))), float(np.mean(is_right(reference))))
    return DuplicateVerdict(duplicate, best, candidates[best], mean_p, shares, ratio, turn, other_hand)


def _one_hand_each(right_share_new: float, right_share_known: float, most: float = 0.8) -> bool:
    """Whether the new frames are mostly of one hand and the known ones mostly of the other."""
    return min(right_share_new, right_share_known) <= 1 - most and max(right_share_new, right_share_known) >= most
