"""In-graph pose features of raw frames: normalized coordinates plus rotation-free hand shape.

* `coords` (63): landmarks with left hands mirrored, centred on their mean and divided by their
  RMS (`frames.normalize`). They keep the orientation, which is what tells thumbs-up from
  thumbs-down.
* `distances` (55): the distances between 11 key points (wrist, the five tips, the thumb's IP
  and the four PIP joints), in units of the hand's RMS size. They ignore position, size,
  rotation and mirroring: the hand's shape whatever the angle it is seen from. On the real
  benchmark recordings, a classifier on these alone generalizes to later frames of a gesture
  far better than one on coordinates (whose orientation drifts by tens of degrees).

The graph is kept small and int8-friendly, because every op costs converter time on each
export and quantization error in the legacy uint8 model. The landmark differences are one
product with a constant matrix of 0 and ±1 (exact in int8) instead of two gathers. Two
converter quirks shape the rest: no op may be fed by `ones_like` (a concat with it crashes the
TF 2.21 converter), and centring must stay a mean over the [21, 3] landmarks: computed as a
product with an averaging matrix, the converter gave the centred landmarks (metres) the
quantization scale of the normalized ones, which wiped them out (tests/test_engine_export.py
checks the exported features against the float ones).
"""

from __future__ import annotations

import os
from functools import cache
from itertools import combinations

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine.frames import HANDEDNESS, MIN_MEAN_SQUARE

KEY_POINTS = (0, 4, 8, 12, 16, 20, 3, 6, 10, 14, 18)
KEY_PAIRS: tuple[tuple[int, int], ...] = tuple(combinations(KEY_POINTS, 2))
ALL_KINDS = ("coords", "distances")
DEFAULT_KINDS: tuple[str, ...] = ALL_KINDS
SIZES = {"coords": HANDEDNESS, "distances": len(KEY_PAIRS)}


def n_features(kinds: tuple[str, ...] = DEFAULT_KINDS) -> int:
    return sum(SIZES[k] for k in kinds)


@cache
def _constants() -> dict[str, npt.NDArray[np.float32]]:
    # Mirror factor of left hands: right * slope + offset = (2 right - 1, 1, 1).
    slope = np.array([[2.0, 0.0, 0.0]], np.float32)
    offset = np.array([[-1.0, 1.0, 1.0]], np.float32)
    # flat @ differences = (landmark a - landmark b) for every key pair, [pairs * 3] columns.
    differences = np.zeros((HANDEDNESS, 3 * len(KEY_PAIRS)), np.float32)
    for i, (a, b) in enumerate(KEY_PAIRS):
        for c in range(3):
            differences[3 * a + c, 3 * i + c] = 1.0
            differences[3 * b + c, 3 * i + c] = -1.0
    return {"slope": slope, "offset": offset, "differences": differences}


def tf_normalized(x: tf.Tensor) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, 63] landmarks, left hands mirrored, centred, unit RMS."""
    k = _constants()
    pts = tf.reshape(x[:, :HANDEDNESS], [-1, 21, 3])
    # Handedness arrives as 1.0 (raw) or 0.127 (the apps' clamped uint8 input): both are right.
    right = tf.minimum(x[:, HANDEDNESS:] * 20.0, 1.0)
    pts = pts * tf.expand_dims(right * k["slope"] + k["offset"], 1)
    centred = tf.reshape(pts - tf.reduce_mean(pts, axis=1, keepdims=True), [-1, HANDEDNESS])
    mean_square = tf.reduce_mean(tf.square(centred), axis=1, keepdims=True)
    return centred * tf.math.rsqrt(tf.maximum(mean_square, MIN_MEAN_SQUARE))


def tf_features(x: tf.Tensor, kinds: tuple[str, ...] = DEFAULT_KINDS) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, n_features(kinds)] features."""
    coords = tf_normalized(x)
    parts = []
    if "coords" in kinds:
        parts.append(coords)
    if "distances" in kinds:
        diff = tf.matmul(coords, _constants()["differences"])
        squared = tf.reduce_sum(tf.reshape(tf.square(diff), [-1, len(KEY_PAIRS), 3]), axis=2)
        parts.append(tf.sqrt(squared + 1e-4))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


def features(frames: npt.ArrayLike, kinds: tuple[str, ...] = DEFAULT_KINDS) -> npt.NDArray[np.float32]:
    """NumPy front-end of `tf_features` (the same graph, run eagerly)."""
    x = tf.constant(np.asarray(frames, dtype=np.float32))
    return np.asarray(tf_features(x, kinds), dtype=np.float32)
