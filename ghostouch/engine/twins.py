"""Gestures with the same hand shape that differ only by orientation (thumbs up and thumbs down,
pointing left and right).

Two recordings of one shape are never quite the same shape, and a classifier happily separates
such twins by those small shape differences, which the next attempt at either pose does not
repeat: on synthetic twins with the pose embedding among the features, about a third of later
"point right" frames ended below 0.5. So the engine spots twins (each recording within the
other's augmented spread, the duplicate check's criterion) and trains each twin on the other's
frames too, turned into its own orientation: the shape then tells the twins nothing and only the
orientation separates them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ghostouch.engine import negatives
from ghostouch.engine.augment import mirrored_points, palm_axes, to_frames

Frames = npt.NDArray[np.float32]
MAX_TWIN_RATIO = 1.25  # a little looser than `duplicates.MAX_SPREAD_RATIO` (1.15)


def orientation_twins(sets: list[Frames], max_ratio: float = MAX_TWIN_RATIO) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of gestures whose recordings have the same hand shape."""
    spreads = [negatives.shape_spread(s) if len(s) else None for s in sets]
    pairs = []
    for i, first in enumerate(spreads):
        for j in range(i + 1, len(sets)):
            second = spreads[j]
            if first is None or second is None:
                continue
            to_first = negatives.spread_ratio(second[0], first)
            to_second = negatives.spread_ratio(first[0], second)
            if max(to_first, to_second) <= max_ratio:
                pairs.append((i, j))
    return pairs


def reoriented(shapes: Frames, orientations: Frames, n: int, rng: np.random.Generator) -> Frames:
    """n frames: the hand shape of a random frame of `shapes`, turned so that its palm lies like
    that of a random frame of `orientations`, at that frame's position, size and handedness."""
    a = orientations[rng.integers(0, len(orientations), n)]
    b = shapes[rng.integers(0, len(shapes), n)]
    target, sign = mirrored_points(a)
    source, _ = mirrored_points(b)
    to_target = np.stack(palm_axes(target), axis=2)  # columns: distal, lateral, palmar
    from_source = np.stack(palm_axes(source), axis=2)
    turn = to_target @ np.transpose(from_source, (0, 2, 1))
    centre_t, centre_s = target.mean(axis=1, keepdims=True), source.mean(axis=1, keepdims=True)
    rms_t = np.sqrt(np.mean((target - centre_t) ** 2, axis=(1, 2)))
    rms_s = np.sqrt(np.mean((source - centre_s) ** 2, axis=(1, 2)))
    scale = (rms_t / np.maximum(rms_s, 1e-9))[:, None, None]
    turned = np.matmul(source - centre_s, np.transpose(turn, (0, 2, 1))) * scale + centre_t
    return to_frames(turned, sign, a)
