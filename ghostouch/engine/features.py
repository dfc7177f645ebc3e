"""In-graph pose features of raw frames: normalized coordinates plus rotation-free hand shape.

* `coords` (63): landmarks with left hands mirrored, centred on their mean and divided by their
  RMS (`frames.normalize`). They keep the orientation, which is what tells thumbs-up from
  thumbs-down and point-left from point-right.
* `angles` (15): cosine of the bend at every finger joint (wrist-MCP-PIP, MCP-PIP-DIP,
  PIP-DIP-tip, and the thumb's chain). They do not change when the hand turns or moves.
* `spread` (15): fingertip-to-fingertip (10) and fingertip-to-wrist (5) distances, in units of
  the hand's RMS size. Also orientation-free; they tell an open hand from a pinch or a fist.
* `distances` (55): all distances between 11 key points (wrist, the five tips, the thumb's IP
  and the four PIP joints), in units of the hand's RMS size: a richer orientation-free shape.

Everything is built from ops that the TFLite int8 converter handles (gather, sub, mul, sum,
rsqrt, sqrt, concat of computed tensors); exports are tested in tests/test_engine_export.py.
"""

from __future__ import annotations

import os
from itertools import combinations

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine.frames import HANDEDNESS, MIN_MEAN_SQUARE

# Landmark chains, wrist first: thumb, index, middle, ring, little.
CHAINS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (0, 13, 14, 15, 16), (0, 17, 18, 19, 20))
TIPS = (4, 8, 12, 16, 20)
# Bones as (parent, child) landmark pairs, four per chain.
_BONE_PARENT = [c[i] for c in CHAINS for i in range(4)]
_BONE_CHILD = [c[i + 1] for c in CHAINS for i in range(4)]
# Joints as (bone into the joint, bone out of it), three per chain.
_JOINT_IN = [4 * f + i for f in range(5) for i in range(3)]
_JOINT_OUT = [4 * f + i + 1 for f in range(5) for i in range(3)]
_PAIRS = [*combinations(TIPS, 2), *((0, t) for t in TIPS)]
KEY_POINTS = (0, 4, 8, 12, 16, 20, 3, 6, 10, 14, 18)
KEY_PAIRS = list(combinations(KEY_POINTS, 2))

ALL_KINDS = ("coords", "angles", "spread", "distances")
DEFAULT_KINDS: tuple[str, ...] = ("coords", "distances")
SIZES = {"coords": HANDEDNESS, "angles": len(_JOINT_IN), "spread": len(_PAIRS), "distances": len(KEY_PAIRS)}
# Bone length floor (normalized units, squared) so that a collapsed bone cannot blow up rsqrt.
_MIN_BONE_SQUARE = 1e-3


def n_features(kinds: tuple[str, ...] = DEFAULT_KINDS) -> int:
    return sum(SIZES[k] for k in kinds)


def tf_normalized_points(x: tf.Tensor) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, 21, 3] landmarks, left hands mirrored, centred, unit RMS."""
    pts = tf.reshape(x[:, :HANDEDNESS], [-1, 21, 3])
    right = tf.clip_by_value(x[:, HANDEDNESS:] * 20.0, 0.0, 1.0)
    sign = tf.expand_dims(2.0 * right - 1.0, 1)
    # Negate x of left hands. (Built from constant masks: a concat with ones_like here crashes
    # the TFLite converter of TF 2.21.)
    pts = pts * (sign * tf.constant([[[1.0, 0.0, 0.0]]]) + tf.constant([[[0.0, 1.0, 1.0]]]))
    centred = pts - tf.reduce_mean(pts, axis=1, keepdims=True)
    flat = tf.reshape(centred, [-1, HANDEDNESS])
    mean_square = tf.reduce_mean(tf.square(flat), axis=1, keepdims=True)
    inv_scale = tf.math.rsqrt(tf.maximum(mean_square, MIN_MEAN_SQUARE))
    return centred * tf.expand_dims(inv_scale, 2)


def tf_features(x: tf.Tensor, kinds: tuple[str, ...] = DEFAULT_KINDS) -> tf.Tensor:
    """Raw [b, 64] frames -> [b, n_features(kinds)] features."""
    pts = tf_normalized_points(x)
    parts = []
    if "coords" in kinds:
        parts.append(tf.reshape(pts, [-1, HANDEDNESS]))
    if "angles" in kinds:
        bones = tf.gather(pts, _BONE_CHILD, axis=1) - tf.gather(pts, _BONE_PARENT, axis=1)
        length_sq = tf.reduce_sum(tf.square(bones), axis=2, keepdims=True)
        unit = bones * tf.math.rsqrt(tf.maximum(length_sq, _MIN_BONE_SQUARE))
        cosines = tf.gather(unit, _JOINT_IN, axis=1) * tf.gather(unit, _JOINT_OUT, axis=1)
        parts.append(tf.reduce_sum(cosines, axis=2))
    for kind, pairs in (("spread", _PAIRS), ("distances", KEY_PAIRS)):
        if kind in kinds:
            a = tf.gather(pts, [p[0] for p in pairs], axis=1)
            b = tf.gather(pts, [p[1] for p in pairs], axis=1)
            parts.append(tf.sqrt(tf.reduce_sum(tf.square(a - b), axis=2) + 1e-4))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


def features(frames: npt.ArrayLike, kinds: tuple[str, ...] = DEFAULT_KINDS) -> npt.NDArray[np.float32]:
    """NumPy front-end of `tf_features` (the same graph, run eagerly)."""
    x = tf.constant(np.asarray(frames, dtype=np.float32))
    return np.asarray(tf_features(x, kinds), dtype=np.float32)
