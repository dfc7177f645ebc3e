"""A familiarity gate: "no gesture" far from every recorded frame of the model's gestures.

A classifier trained on a few gestures still answers confidently for hands unlike any of them,
as long as they lie on its side of a boundary; the unknown poses it is trained on (negatives.py)
cover only part of that space. The gate measures how far a frame is from the recorded frames
(prototypes) of every gesture, in the model's own pose description (the pose embedding plus the
key-point distances, `describe`), in units of each gesture's spread (how far the engine's
augmented copies of its frames reach), and scales the logits towards 0 beyond `RADIUS` spreads:
the softmax then tends to 1/N (below 0.5 from three gestures on), the apps' "no gesture".

It runs inside the exported graph. On the benchmark's 2-D sets (16 repetitions; the radius
trade-off is in bench/RESULTS.md) it cut never-trained gestures shown as a gesture from 28 to 7 %
(Libras; new-gesture recall 97 to 95 %) and from 16 to 6 % (kinivi, whose recall paid more: 88 to
75 %). The radius, 1.45, is the one that leaves Libras the most room to both its recall (>= 90 %)
and false-accept (<= 10 %) targets when the base is imported from whole recordings
(bench/import_protocol.py, 24 repetitions: 94.9 % and 8.2 %; at 1.5, 95.7 % and 9.7 %).

World-landmark models get it too, with radius `RADIUS_3D` (their classifier has no embedding, so
the graph computes the gate's description beside its features): on synthetic one-hand
recordings it cut poses never taught shown as a gesture from 11.1 to 2.1 % at the same recall
(bench/synthetic_world.py), and on the real world-landmark set from 1.8 to 0.3 %. Not for
gestures learned from many people's hands, such as the synthetic base_v1: a user's own frames
then lie about as far from them as poses never taught (bases.MANY_HANDS_CONFIG).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine import negatives
from ghostouch.engine.augment import AugmentConfig
from ghostouch.engine.features import SIZES, features

Frames = npt.NDArray[np.float32]
RADIUS = 1.45  # spreads
RADIUS_3D = 1.7  # spreads, for world-landmark models
SHARPNESS = 20.0  # slope of the gate at the radius
DISTANCE_WEIGHT = 0.1  # of the key-point distances beside the (unit-length) embedding
MAX_PROTOTYPES = 100  # per gesture
N_DISTANCES = SIZES["distances"]
# The features the gate reads start with the distances and end with the embedding: the 2-D
# feature sets (`features.FLAT_KINDS`, `features.FLAT_SHAPE_KINDS`), and a world-landmark
# model's features with the embedding appended (`model.tf_logits`).
EMBEDDING = slice(-SIZES["embedding"], None)
KINDS = ("distances", "embedding")


@dataclass(frozen=True)
class Gate:
    prototypes: npt.NDArray[np.float32]  # [m, 87] descriptions of recorded frames
    inverse_radius: npt.NDArray[np.float32]  # [m] 1 / (RADIUS * spread of the prototype's gesture)


def tf_describe(f: tf.Tensor) -> tf.Tensor:
    """[b, f] features of a 2-D feature set -> [b, 87] pose descriptions."""
    return tf.concat([f[:, EMBEDDING], DISTANCE_WEIGHT * f[:, :N_DISTANCES]], axis=1)


def tf_distance(f: tf.Tensor, prototypes: tf.Tensor, inverse_radius: tf.Tensor) -> tf.Tensor:
    """[b, 1] distance of each frame's description to the nearest prototype, in units of
    RADIUS spreads of that prototype's gesture."""
    d = tf_describe(f)
    square = tf.reduce_sum(tf.square(prototypes), axis=1)
    d2 = tf.reduce_sum(tf.square(d), axis=1, keepdims=True) - 2.0 * tf.matmul(d, prototypes, transpose_b=True) + square
    return tf.sqrt(tf.reduce_min(tf.maximum(d2, 0.0) * tf.square(inverse_radius), axis=1, keepdims=True) + 1e-12)


def tf_factor(f: tf.Tensor, prototypes: tf.Tensor, inverse_radius: tf.Tensor) -> tf.Tensor:
    """[b, 1] factors for the logits, in (0, 1): about 1 near the prototypes, about 0 beyond
    the radius (inside the exported graphs, `model.tf_logits`)."""
    return tf.sigmoid(SHARPNESS * (1.0 - tf_distance(f, prototypes, inverse_radius)))


def describe(flat_features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """NumPy front-end of `tf_describe`."""
    return np.asarray(tf_describe(tf.constant(np.asarray(flat_features, np.float32))), np.float32)


def describe_frames(frames: Frames) -> npt.NDArray[np.float32]:
    """Raw frames -> [n, 87] pose descriptions (`describe` of their distances and embedding)."""
    return describe(features(frames, KINDS))


def build(
    train_sets: list[Frames],
    rng: np.random.Generator,
    radius: float = RADIUS,
    augmentation: AugmentConfig | None = None,
) -> Gate:
    """The gate for the gestures whose recorded frames (those the model was trained on) are
    `train_sets`; `augmentation`: the engine's, whose copies measure each gesture's spread."""
    prototypes, inverse = [], []
    for frames in train_sets:
        keep = frames[rng.permutation(len(frames))[:MAX_PROTOTYPES]]
        reference, spread = negatives.augmented_spread(keep, describe_frames, rng, 1, augmentation)
        prototypes.append(reference)
        inverse.append(np.full(len(reference), 1.0 / (radius * spread), np.float32))
    return Gate(np.concatenate(prototypes).astype(np.float32), np.concatenate(inverse).astype(np.float32))


def distance(gate: Gate, flat_features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """NumPy front-end of `tf_distance`: [n] distances to the nearest prototype, in RADIUS spreads."""
    f = tf.constant(np.asarray(flat_features, np.float32))
    return np.asarray(tf_distance(f, tf.constant(gate.prototypes), tf.constant(gate.inverse_radius)))[:, 0]
