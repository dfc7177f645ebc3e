"""In-graph pose features of raw frames: the hand's shape, plus its orientation.

Default features (`DEFAULT_KINDS`, 64 values), in units of the hand's size (the RMS distance
of its landmarks from their mean), computed from the normalized landmarks of `coords`:

* `distances` (55): the distances between 11 key points (wrist, the five tips, the thumb's IP
  and the four PIP joints). They ignore position, size, rotation and mirroring: the hand's
  shape whatever the angle it is seen from. On the benchmark's real recordings, a classifier on
  these generalizes to later frames of a gesture far better than one on landmark coordinates,
  whose orientation drifts by tens of degrees within minutes.
* `palm` (9): the three wrist-to-MCP vectors, left hands mirrored. They carry the orientation
  (what tells thumbs-up from thumbs-down, or pointing left from pointing right) in 9 numbers
  instead of 63, so the classifier leans on the shape and uses orientation only where the
  shape cannot tell two gestures apart.

* `embedding` (32), added for recordings of 2-D keypoints (every z = 0; `FLAT_KINDS`, or
  `FLAT_SHAPE_KINDS`, without `palm`, when no two gestures share a hand shape): the
  distances mapped by the pose embedding learned from synthetic hands (`pose_embedding.py`),
  which brings the same pose seen from other angles back together, where flattening makes the
  distances themselves depend on the angle. World landmarks do not need it: on the 3-D
  benchmark set nothing changed, and on synthetic hands of other people it cost recall (a fist
  recognized 69 instead of 79 % of the time, in the setting of
  tests/test_engine_training.py::test_other_people_mostly_recognized), because it tells finer
  shape differences apart.

Experiments can also ask for `coords` (63): landmarks with left hands mirrored, centred and
divided by their RMS (`frames.normalize`), the features of earlier engines.

The graph is small, because every op costs converter time on each export (about 10 ms for the
two exports) and stays int8-friendly for the float variant's int8 weights: landmark differences
are products with constant matrices of 0 and ±1, sizes are normalized before distances are
squared, and no op is fed by `ones_like` (a concat with it crashes the TF 2.21 converter). The
legacy uint8 model computes them in float32 (export.py); tests/test_engine_features.py checks
that it gives the trained model's probabilities.
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
from ghostouch.engine.pose_embedding import DIMENSIONS, tf_embed

KEY_POINTS = (0, 4, 8, 12, 16, 20, 3, 6, 10, 14, 18)
KEY_PAIRS: tuple[tuple[int, int], ...] = tuple(combinations(KEY_POINTS, 2))
PALM_PAIRS: tuple[tuple[int, int], ...] = ((5, 0), (9, 0), (17, 0))
ALL_KINDS = ("coords", "distances", "palm", "embedding")
DEFAULT_KINDS: tuple[str, ...] = ("distances", "palm")
FLAT_KINDS: tuple[str, ...] = ("distances", "palm", "embedding")
# 2-D models without orientation twins leave the orientation out: on the benchmark's 2-D sets
# it only cost recall (Libras: 95.4 against 94.1 % with it, old gestures 96.8 against 95.9 %).
FLAT_SHAPE_KINDS: tuple[str, ...] = ("distances", "embedding")
SIZES = {"coords": HANDEDNESS, "distances": len(KEY_PAIRS), "palm": 3 * len(PALM_PAIRS), "embedding": DIMENSIONS}


def n_features(kinds: tuple[str, ...] = DEFAULT_KINDS) -> int:
    return sum(SIZES[k] for k in kinds)


def kinds_for(n_inputs: int) -> tuple[str, ...]:
    """The feature kinds of a model whose first layer takes `n_inputs` features."""
    for kinds in (DEFAULT_KINDS, FLAT_KINDS, FLAT_SHAPE_KINDS):
        if n_features(kinds) == n_inputs:
            return kinds
    raise ValueError(f"no feature set has {n_inputs} features")


def _difference_matrix(pairs: tuple[tuple[int, int], ...]) -> npt.NDArray[np.float32]:
    """flat @ matrix = (landmark a - landmark b) for every pair: [63, 3 * pairs]."""
    matrix = np.zeros((HANDEDNESS, 3 * len(pairs)), np.float32)
    for i, (a, b) in enumerate(pairs):
        for c in range(3):
            matrix[3 * a + c, 3 * i + c] = 1.0
            matrix[3 * b + c, 3 * i + c] = -1.0
    return matrix


@cache
def _constants() -> dict[str, npt.NDArray[np.float32]]:
    axis = np.arange(HANDEDNESS) % 3
    centring = np.zeros((HANDEDNESS + 1, HANDEDNESS), np.float32)  # handedness row stays 0
    centring[:HANDEDNESS] = np.eye(HANDEDNESS) - (axis[:, None] == axis[None, :]) / 21.0
    handedness = np.zeros((HANDEDNESS + 1, 1), np.float32)
    handedness[HANDEDNESS, 0] = 40.0
    # Mirror factor of left hands: right * slope + offset = (2 right - 1, 1, 1).
    return {
        "centring": centring,
        "handedness": handedness,
        "palm_slope": np.array([[1.0, 0.0, 0.0] * len(PALM_PAIRS)], np.float32),
        "palm_offset": np.array([[-1.0, 1.0, 1.0] * len(PALM_PAIRS)], np.float32),
        "slope": np.array([[2.0, 0.0, 0.0]], np.float32),
        "offset": np.array([[-1.0, 1.0, 1.0]], np.float32),
        "differences": _difference_matrix(KEY_PAIRS),
        "sum_xyz": np.repeat(np.eye(len(KEY_PAIRS), dtype=np.float32), 3, axis=0),  # [165, 55]
        "palm": _difference_matrix(PALM_PAIRS),
    }


def _right(x: tf.Tensor) -> tf.Tensor:
    """[b, 1]: 1 for right hands, 0 for left. Handedness arrives as 1.0 (raw floats) or 0.127
    (the apps' clamped uint8 input)."""
    return tf.minimum(x[:, HANDEDNESS:] * 20.0, 1.0)


def tf_shape_features(x: tf.Tensor) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, 64]: `distances` then `palm` (see the module docstring).

    Written for the fewest graph ops (each costs about 4 ms of tracing and freezing over the two
    exports): centring, the handedness and the landmark differences are all products of the raw
    frame with constant matrices, so no slicing or reshaping of the input is needed.
    """
    k = _constants()
    centred = tf.matmul(x, k["centring"])  # [b, 63] metres, centred on the landmarks' mean
    mean_square = tf.reduce_mean(tf.square(centred), axis=1, keepdims=True)
    coords = centred * tf.math.rsqrt(tf.maximum(mean_square, MIN_MEAN_SQUARE))
    squared = tf.matmul(tf.square(tf.matmul(coords, k["differences"])), k["sum_xyz"])
    # Mirror of left hands: x * (2 right - 1), right = min(20 h, 1) (h = 1.0 raw, 0.127 app).
    mirror = tf.minimum(tf.matmul(x, k["handedness"]), 2.0) * k["palm_slope"] + k["palm_offset"]
    return tf.concat([tf.sqrt(squared), tf.matmul(coords, k["palm"]) * mirror], axis=1)


def tf_normalized(x: tf.Tensor) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, 63] landmarks, left hands mirrored, centred, unit RMS.

    (Computed as `flat - flat @ average`, the converter gave the centred landmarks, in metres,
    the quantization scale of the normalized ones, which wiped them out; the single product
    with a centring matrix in `tf_shape_features` keeps its own scale.)"""
    k = _constants()
    pts = tf.reshape(x[:, :HANDEDNESS], [-1, 21, 3])
    pts = pts * tf.expand_dims(_right(x) * k["slope"] + k["offset"], 1)
    centred = tf.reshape(pts - tf.reduce_mean(pts, axis=1, keepdims=True), [-1, HANDEDNESS])
    mean_square = tf.reduce_mean(tf.square(centred), axis=1, keepdims=True)
    return centred * tf.math.rsqrt(tf.maximum(mean_square, MIN_MEAN_SQUARE))


def tf_features(x: tf.Tensor, kinds: tuple[str, ...] = DEFAULT_KINDS) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, n_features(kinds)] features, in the order of `kinds`."""
    n_distances = SIZES["distances"]
    shape = tf_shape_features(x) if {"distances", "palm", "embedding"} & set(kinds) else None
    parts = []
    for kind in kinds:
        if kind == "coords":
            parts.append(tf_normalized(x))
        elif kind == "distances":
            parts.append(shape[:, :n_distances])  # type: ignore[index]
        elif kind == "palm":
            parts.append(shape[:, n_distances:])  # type: ignore[index]
        else:
            parts.append(tf_embed(shape[:, :n_distances]))  # type: ignore[index]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


def features(frames: npt.ArrayLike, kinds: tuple[str, ...] = DEFAULT_KINDS) -> npt.NDArray[np.float32]:
    """NumPy front-end of `tf_features` (the same graph, run eagerly)."""
    x = tf.constant(np.asarray(frames, dtype=np.float32))
    return np.asarray(tf_features(x, kinds), dtype=np.float32)
