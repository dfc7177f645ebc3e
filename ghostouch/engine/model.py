"""The gesture classifier as a TensorFlow graph: in-graph features, an MLP, softmax.

The exported model is `softmax(tf_logits(x, weights))` with the trained weights baked in as
constants; it computes its features (`features.tf_features`) from the raw frames, so the apps
send frames as before. Training works on the features of the training samples, computed once
with that same graph and standardized; the standardization is folded into the first layer
afterwards. It is mini-batch Adam over a fixed plan of batches (drawn in NumPy in proportion to
the sample weights) in one XLA-compiled `tf.function`. Its shapes are (steps, batch, features,
outputs padded to a power of two), so a warm worker compiles it once per output bucket (8,
16, ...) and every job with up to 8 gestures reuses the warm-up's compilation. 400 steps of
128 take about 40-60 ms on two cores; the previous full-batch loop (2900 samples x 400 steps,
features recomputed every step) took 3-5 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine import features as feats
from ghostouch.engine import gate as gating

Weights = list[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (64, 32)
    steps: int = 400
    batch_size: int = 128
    learning_rate: float = 1e-2
    weight_decay: float = 3e-4
    seed: int = 0


def _mlp(f: tf.Tensor, params: list[tf.Tensor]) -> tf.Tensor:
    """Dense layers with relu between them: params = [w1, b1, ..., w_out, b_out]."""
    h = f
    for i in range(0, len(params) - 2, 2):
        h = tf.nn.relu(tf.matmul(h, params[i]) + params[i + 1])
    return tf.matmul(h, params[-2]) + params[-1]


def tf_logits(x: tf.Tensor, weights: list[tf.Tensor], gate: tuple[tf.Tensor, tf.Tensor] | None = None) -> tf.Tensor:
    """Raw [b, 64] frames -> logits; the features are those the first layer was trained on.
    `gate`: (prototypes, inverse radii) of a `gate.Gate`, which scales the logits towards 0."""
    n_inputs = int(weights[0].shape[0])
    kinds = feats.kinds_for(n_inputs)
    # The gate describes poses by the distances (first) and the embedding (last): world-landmark
    # classifiers do without the embedding, so it is appended to their features for the gate.
    if gate is not None and "embedding" not in kinds:
        kinds = (*kinds, "embedding")
    f = feats.tf_features(x, kinds)
    logits = _mlp(f[:, :n_inputs], weights)
    return logits if gate is None else logits * gating.tf_factor(f, *gate)


def _spec(n_params: int) -> list[tf.TensorSpec]:
    return [
        tf.TensorSpec([None, None, None], tf.float32),  # [steps, batch, features] standardized
        tf.TensorSpec([None, None, None], tf.float32),  # [steps, batch, outputs] soft targets
        tf.TensorSpec([None], tf.float32),  # logit offsets: 0 for real outputs, -1e9 for padding
        tf.TensorSpec([], tf.float32),  # learning rate
        tf.TensorSpec([], tf.float32),  # weight decay
        *[tf.TensorSpec([None, None] if i % 2 == 0 else [None], tf.float32) for i in range(n_params)],
    ]


def _train_loop(fb, tb, offsets, lr, decay, *start):  # type: ignore[no-untyped-def]
    params = list(start)
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
            loss += decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in params[:-2:2]])
        grads = tape.gradient(loss, params)
        t = tf.cast(i + 1, tf.float32)
        # Short warm-up, then cosine decay: big steps early, a quiet finish.
        lr_t = lr * tf.minimum(1.0, t / 20.0) * 0.5 * (1.0 + tf.cos(np.pi * t / total))
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


@lru_cache(maxsize=8)
def _trainer(xla: bool, n_params: int) -> Any:
    """The training loop as one graph. With XLA it is compiled once per (steps, batch, features,
    padded outputs) shape, which the fixed batch plan and output padding keep to a handful."""
    return tf.function(_train_loop, input_signature=_spec(n_params), jit_compile=xla, reduce_retracing=True)


@lru_cache(maxsize=2)
def _feature_graph(kinds: tuple[str, ...]) -> Any:
    return tf.function(
        lambda x: feats.tf_features(x, kinds),
        input_signature=[tf.TensorSpec([None, 64], tf.float32)],
    )


def padded_outputs(n: int) -> int:
    """Output columns used while training: powers of two from 8, so XLA sees few shapes."""
    return max(8, 1 << (n - 1).bit_length())


USE_XLA = True
MIN_FEATURE_STD = 0.05


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
    kinds: tuple[str, ...] = feats.DEFAULT_KINDS,
) -> Weights:
    """Mini-batch Adam on soft targets, batches drawn in proportion to the sample weights.

    Returns the trained weights as NumPy arrays, the feature standardization folded into the
    first layer (so `tf_logits` takes raw frames).
    """
    global USE_XLA
    f = np.asarray(_feature_graph(kinds)(tf.constant(x, tf.float32)))
    mean = f.mean(axis=0)
    # Features that hardly vary in the training set (palm z of 2-D keypoints, say) carry only
    # noise: they are switched off rather than scaled up into the decision.
    spread = f.std(axis=0)
    std = np.maximum(spread, MIN_FEATURE_STD)
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
        tf.constant(config.learning_rate, tf.float32),
        tf.constant(config.weight_decay, tf.float32),
        *[tf.constant(w) for w in start],
    )
    try:
        out = _trainer(USE_XLA, len(start))(*args)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):  # pragma: no cover
        if not USE_XLA:
            raise
        USE_XLA = False  # no XLA on this machine: the plain graph computes the same thing
        out = _trainer(False, len(start))(*args)
    weights = [np.array(w, dtype=np.float32) for w in out]
    weights[-2], weights[-1] = weights[-2][:, :n_out].copy(), weights[-1][:n_out].copy()
    w1, b1 = weights[0], weights[1]
    w1[spread < MIN_FEATURE_STD] = 0.0
    weights[0] = (w1 / std[:, None]).astype(np.float32)
    weights[1] = (b1 - (mean / std) @ w1).astype(np.float32)
    return weights


@lru_cache(maxsize=8)
def _predictor(n_params: int, n_inputs: int, gated: bool) -> Any:
    spec = [tf.TensorSpec([None, 64], tf.float32), tf.TensorSpec([n_inputs, None], tf.float32)]
    spec += [tf.TensorSpec([None, None] if i % 2 == 0 else [None], tf.float32) for i in range(1, n_params)]
    if gated:
        spec += [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32)]

    @tf.function(input_signature=spec)
    def predict(x, *arrays):  # type: ignore[no-untyped-def]
        gate = (arrays[n_params], arrays[n_params + 1]) if gated else None
        return tf.nn.softmax(tf_logits(x, list(arrays[:n_params]), gate))

    return predict


def predict_proba(
    weights: Weights, x: npt.NDArray[np.float32], gate: gating.Gate | None = None
) -> npt.NDArray[np.float32]:
    """Float-model softmax probabilities for raw [n, 64] frames."""
    predict = _predictor(len(weights), int(weights[0].shape[0]), gate is not None)
    arrays = [*weights, *([] if gate is None else [gate.prototypes, gate.inverse_radius])]
    out = predict(tf.constant(x, tf.float32), *[tf.constant(w) for w in arrays])
    return np.asarray(out, dtype=np.float32)
