"""The gesture classifier as a TensorFlow graph: in-graph normalization, an MLP, softmax.

Training runs as one traced `tf.function` whose weights are arguments, so every job in a warm
worker reuses the same graph whatever its number of samples or gestures. The exported model is
the same forward function with the trained weights baked in as constants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine.frames import HANDEDNESS, MIN_MEAN_SQUARE

Weights = list[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, int] = (128, 64)
    steps: int = 400
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def tf_features(x: tf.Tensor) -> tf.Tensor:
    """TensorFlow twin of `frames.normalize`: raw [b, 64] frames -> [b, 63] pose features."""
    pts = tf.reshape(x[:, :HANDEDNESS], [-1, 21, 3])
    right = tf.clip_by_value(x[:, HANDEDNESS:] * 20.0, 0.0, 1.0)
    sign = tf.expand_dims(2.0 * right - 1.0, 1)
    # Negate x of left hands. (Built from constant masks: a concat with ones_like here crashes
    # the TFLite converter of TF 2.21.)
    pts = pts * (sign * tf.constant([[[1.0, 0.0, 0.0]]]) + tf.constant([[[0.0, 1.0, 1.0]]]))
    centred = pts - tf.reduce_mean(pts, axis=1, keepdims=True)
    mean_square = tf.reduce_mean(tf.square(tf.reshape(centred, [-1, HANDEDNESS])), axis=1, keepdims=True)
    inv_scale = tf.math.rsqrt(tf.maximum(mean_square, MIN_MEAN_SQUARE))
    return tf.reshape(centred, [-1, HANDEDNESS]) * inv_scale


def tf_logits(x: tf.Tensor, weights: list[tf.Tensor]) -> tf.Tensor:
    w1, b1, w2, b2, w3, b3 = weights
    h = tf.nn.relu(tf.matmul(tf_features(x), w1) + b1)
    h = tf.nn.relu(tf.matmul(h, w2) + b2)
    return tf.matmul(h, w3) + b3


_SPEC = [
    tf.TensorSpec([None, 64], tf.float32),  # x
    tf.TensorSpec([None, None], tf.float32),  # soft targets
    tf.TensorSpec([None], tf.float32),  # sample weights
    tf.TensorSpec([None, None], tf.float32),  # w1
    tf.TensorSpec([None], tf.float32),
    tf.TensorSpec([None, None], tf.float32),  # w2
    tf.TensorSpec([None], tf.float32),
    tf.TensorSpec([None, None], tf.float32),  # w3
    tf.TensorSpec([None], tf.float32),
    tf.TensorSpec([], tf.int32),  # steps
    tf.TensorSpec([], tf.float32),  # learning rate
    tf.TensorSpec([], tf.float32),  # weight decay
]


@lru_cache(maxsize=1)
def _trainer() -> Any:
    @tf.function(input_signature=_SPEC, reduce_retracing=True)
    def train(x, targets, sw, w1, b1, w2, b2, w3, b3, steps, lr, decay):  # type: ignore[no-untyped-def]
        params = [w1, b1, w2, b2, w3, b3]
        m = [tf.zeros_like(p) for p in params]
        v = [tf.zeros_like(p) for p in params]
        sw = sw / tf.reduce_sum(sw)
        beta1, beta2, eps = 0.9, 0.999, 1e-8

        def step(i, params, m, v):  # type: ignore[no-untyped-def]
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits = tf_logits(x, params)
                ce = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
                loss = tf.reduce_sum(ce * sw)
                loss += decay * (tf.reduce_sum(tf.square(params[0])) + tf.reduce_sum(tf.square(params[2])))
            grads = tape.gradient(loss, params)
            t = tf.cast(i + 1, tf.float32)
            # Cosine decay of the step size keeps the last steps from bouncing around.
            lr_t = lr * 0.5 * (1.0 + tf.cos(np.pi * t / tf.cast(steps, tf.float32)))
            correction = tf.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
            new_m = [beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads, strict=True)]
            new_v = [beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads, strict=True)]
            new_p = [
                p - lr_t * correction * mi / (tf.sqrt(vi) + eps) for p, mi, vi in zip(params, new_m, new_v, strict=True)
            ]
            return i + 1, new_p, new_m, new_v

        _, params, _, _ = tf.while_loop(
            lambda i, *_: i < steps, step, [tf.constant(0), params, m, v], parallel_iterations=1
        )
        return params

    return train


def init_weights(n_outputs: int, config: TrainConfig) -> Weights:
    rng = np.random.default_rng(config.seed)
    sizes = [HANDEDNESS, *config.hidden, n_outputs]
    weights: Weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, np.float32))
    return weights


def train_weights(
    x: npt.NDArray[np.float32],
    targets: npt.NDArray[np.float32],
    sample_weights: npt.NDArray[np.float32],
    config: TrainConfig,
) -> Weights:
    """Full-batch Adam on soft targets; returns the trained weights as NumPy arrays."""
    start = init_weights(targets.shape[1], config)
    out = _trainer()(
        tf.constant(x, tf.float32),
        tf.constant(targets, tf.float32),
        tf.constant(sample_weights, tf.float32),
        *[tf.constant(w) for w in start],
        tf.constant(config.steps, tf.int32),
        tf.constant(config.learning_rate, tf.float32),
        tf.constant(config.weight_decay, tf.float32),
    )
    return [np.asarray(w, dtype=np.float32) for w in out]


def predict_proba(weights: Weights, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Float-model softmax probabilities for raw [n, 64] frames."""
    logits = tf_logits(tf.constant(x, tf.float32), [tf.constant(w) for w in weights])
    return np.asarray(tf.nn.softmax(logits), dtype=np.float32)
