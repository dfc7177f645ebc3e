"""The gesture classifier as a TensorFlow graph: in-graph features, an MLP, softmax.

The exported model is `softmax(tf_logits(x, weights))` with the trained weights baked in as
constants; it computes its features (`features.tf_features`) from the raw frames, so the apps
send frames as before. Training works on the features of the training samples, computed once
with that same graph and standardized; the standardization is folded into the first layer
afterwards. It runs as one traced `tf.function` (mini-batch Adam, weights and the batches'
sample indices as arguments), so every job in a warm worker reuses the same graph whatever its
number of samples or gestures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine import features as feats

Weights = list[npt.NDArray[np.float32]]
# The features the exported models compute (see features.py).
FEATURE_KINDS: tuple[str, ...] = feats.DEFAULT_KINDS


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, int] = (64, 32)
    steps: int = 300
    batch_size: int = 128
    learning_rate: float = 1e-2
    weight_decay: float = 3e-4
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def tf_features(x: tf.Tensor) -> tf.Tensor:
    """Raw [b, 64] frames -> the model's [b, n] input features."""
    return feats.tf_features(x, FEATURE_KINDS)


def tf_logits(x: tf.Tensor, weights: list[tf.Tensor]) -> tf.Tensor:
    w1, b1, w2, b2, w3, b3 = weights
    h = tf.nn.relu(tf.matmul(tf_features(x), w1) + b1)
    h = tf.nn.relu(tf.matmul(h, w2) + b2)
    return tf.matmul(h, w3) + b3


def _mlp(f: tf.Tensor, params: list[tf.Tensor]) -> tf.Tensor:
    h = tf.nn.relu(tf.matmul(f, params[0]) + params[1])
    h = tf.nn.relu(tf.matmul(h, params[2]) + params[3])
    return tf.matmul(h, params[4]) + params[5]


_SPEC = [
    tf.TensorSpec([None, None, None], tf.float32),  # [steps, batch, features] standardized
    tf.TensorSpec([None, None, None], tf.float32),  # [steps, batch, outputs] soft targets
    tf.TensorSpec([None], tf.float32),  # logit offsets: 0 for real outputs, -1e9 for padding
    *[tf.TensorSpec([None, None] if i % 2 == 0 else [None], tf.float32) for i in range(6)],
    tf.TensorSpec([], tf.float32),  # learning rate
    tf.TensorSpec([], tf.float32),  # weight decay
]


def _train_loop(fb, tb, offsets, w1, b1, w2, b2, w3, b3, lr, decay):  # type: ignore[no-untyped-def]
    params = [w1, b1, w2, b2, w3, b3]
    m = [tf.zeros_like(p) for p in params]
    v = [tf.zeros_like(p) for p in params]
    steps = tf.shape(fb)[0]
    total = tf.cast(steps, tf.float32)
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def step(i, params, m, v):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits = _mlp(fb[i], params) + offsets
            ce = tf.nn.softmax_cross_entropy_with_logits(labels=tb[i], logits=logits)
            loss = tf.reduce_mean(ce)
            loss += decay * (tf.reduce_sum(tf.square(params[0])) + tf.reduce_sum(tf.square(params[2])))
        grads = tape.gradient(loss, params)
        t = tf.cast(i + 1, tf.float32)
        # Short warm-up, then cosine decay: big steps early, a quiet finish.
        lr_t = lr * tf.minimum(1.0, t / 20.0) * 0.5 * (1.0 + tf.cos(np.pi * t / total))
        correction = tf.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        new_m = [beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads, strict=True)]
        new_v = [beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads, strict=True)]
        new_p = [
            p - lr_t * correction * mi / (tf.sqrt(vi) + eps)
            for p, mi, vi in zip(params, new_m, new_v, strict=True)
        ]
        return i + 1, new_p, new_m, new_v

    _, params, _, _ = tf.while_loop(
        lambda i, *_: i < steps, step, [tf.constant(0), params, m, v], parallel_iterations=1
    )
    return params


@lru_cache(maxsize=2)
def _trainer(xla: bool) -> Any:
    """The training loop as one graph. With XLA it is compiled once per (steps, batch, features,
    padded outputs) shape, which the fixed batch plan and output padding keep to a handful."""
    return tf.function(_train_loop, input_signature=_SPEC, jit_compile=xla, reduce_retracing=True)


@lru_cache(maxsize=1)
def _feature_graph() -> Any:
    return tf.function(
        lambda x: feats.tf_features(x, FEATURE_KINDS),
        input_signature=[tf.TensorSpec([None, 64], tf.float32)],
    )


def padded_outputs(n: int) -> int:
    """Output columns used while training: powers of two from 8, so XLA sees few shapes."""
    return max(8, 1 << (n - 1).bit_length())


USE_XLA = True


def init_weights(n_inputs: int, n_outputs: int, config: TrainConfig) -> Weights:
    rng = np.random.default_rng(config.seed)
    sizes = [n_inputs, *config.hidden, n_outputs]
    weights: Weights = []
    for fan_in, fan_out in pairwise(sizes):
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
    """Mini-batch Adam on soft targets, batches drawn in proportion to the sample weights.

    Returns the trained weights as NumPy arrays, the feature standardization folded into the
    first layer (so `tf_logits` takes raw frames).
    """
    global USE_XLA
    f = np.asarray(_feature_graph()(tf.constant(x, tf.float32)))
    mean = f.mean(axis=0)
    std = np.maximum(f.std(axis=0), 1e-3)
    f = (f - mean) / std
    n_out = targets.shape[1]
    k = padded_outputs(n_out)
    padded = np.zeros((len(targets), k), np.float32)
    padded[:, :n_out] = targets
    offsets = np.where(np.arange(k) < n_out, 0.0, -1e9).astype(np.float32)
    rng = np.random.default_rng(config.seed)
    p = sample_weights.astype(np.float64)
    p /= p.sum()
    batches = rng.choice(len(x), size=(config.steps, config.batch_size), p=p)
    start = init_weights(f.shape[1], k, config)
    args = (
        tf.constant(f[batches], tf.float32),
        tf.constant(padded[batches]),
        tf.constant(offsets),
        *[tf.constant(w) for w in start],
        tf.constant(config.learning_rate, tf.float32),
        tf.constant(config.weight_decay, tf.float32),
    )
    try:
        out = _trainer(USE_XLA)(*args)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):  # pragma: no cover
        if not USE_XLA:
            raise
        USE_XLA = False  # no XLA on this machine: the plain graph computes the same thing
        out = _trainer(False)(*args)
    weights = [np.asarray(w, dtype=np.float32) for w in out]
    weights[4], weights[5] = weights[4][:, :n_out].copy(), weights[5][:n_out].copy()
    w1, b1 = weights[0], weights[1]
    weights[0] = (w1 / std[:, None]).astype(np.float32)
    weights[1] = (b1 - (mean / std) @ w1).astype(np.float32)
    return weights


def predict_proba(weights: Weights, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Float-model softmax probabilities for raw [n, 64] frames."""
    logits = tf_logits(tf.constant(x, tf.float32), [tf.constant(w) for w in weights])
    return np.asarray(tf.nn.softmax(logits), dtype=np.float32)
