"""A re-implementation of the seed project's trainer, as the accuracy benchmark's baseline.

From its description: raw 64 frame values as features; a Conv1D feature extractor, warm-started
from the parent model; a new dense head (128 relu, dropout 0.3, softmax); Adam 1e-3, batch 32,
up to 500 epochs with early stopping (patience 5) on a random 20 % validation split, balanced
class weights. Its duplicate check only catches near-exact copies of the parent's frames
(absolute tolerance 5e-5). The model is exported to the same uint8 TFLite contract as ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf

from ghostouch.engine.export import convert_uint8
from ghostouch.engine.frames import app_view

Frames = npt.NDArray[np.float32]
EXACT_TOLERANCE = 5e-5
EXACT_SHARE = 0.5  # share of new frames that must be copies of one gesture's frames


@dataclass
class SeedModel:
    labels: list[str]
    model: keras.Model
    tflite_uint8: bytes
    frames: dict[str, Frames]  # training frames per gesture (for the exact-copy check)
    epochs: int


def _extractor(seed: int) -> keras.Sequential:
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.layers.Reshape((64, 1)),
            keras.layers.Conv1D(32, 3, padding="same", activation="relu", kernel_initializer=init),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(64, 3, padding="same", activation="relu", kernel_initializer=init),
            keras.layers.MaxPooling1D(2),
            keras.layers.Flatten(),
        ],
        name="extractor",
    )


def build(n_outputs: int, parent: SeedModel | None, seed: int) -> keras.Model:
    extractor = _extractor(seed)
    inputs = keras.Input((64,))
    features = extractor(inputs)
    if parent is not None:
        extractor.set_weights(parent.model.get_layer("extractor").get_weights())
    init = keras.initializers.GlorotUniform(seed=seed + 1)
    h = keras.layers.Dense(128, activation="relu", kernel_initializer=init)(features)
    h = keras.layers.Dropout(0.3, seed=seed)(h)
    out = keras.layers.Dense(n_outputs, activation="softmax", kernel_initializer=init)(h)
    model = keras.Model(inputs, out)
    return model


def _frozen(model: keras.Model) -> tf.types.experimental.ConcreteFunction:
    """The trained network rebuilt from plain TF ops with its weights as constants (the TFLite
    calibrator cannot read Keras variables)."""
    k1, c1, k2, c2 = (tf.constant(w) for w in model.get_layer("extractor").get_weights())
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    w1, b1 = (tf.constant(w) for w in dense[0].get_weights())
    w2, b2 = (tf.constant(w) for w in dense[1].get_weights())

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="landmarks")])
    def serve(x: tf.Tensor) -> tf.Tensor:
        h = tf.expand_dims(x, 2)
        h = tf.nn.relu(tf.nn.conv1d(h, k1, 1, "SAME") + c1)
        h = tf.nn.max_pool1d(h, 2, 2, "VALID")
        h = tf.nn.relu(tf.nn.conv1d(h, k2, 1, "SAME") + c2)
        h = tf.nn.max_pool1d(h, 2, 2, "VALID")
        h = tf.reshape(h, [1, -1])
        return tf.nn.softmax(tf.matmul(tf.nn.relu(tf.matmul(h, w1) + b1), w2) + b2)

    return serve.get_concrete_function()


def export_uint8(model: keras.Model, frames: Frames) -> bytes:
    return convert_uint8(_frozen(model), frames)


def _fit(model: keras.Model, x: Frames, y: np.ndarray, weights: np.ndarray, val: tuple, seed: int) -> int:
    """Keras `fit` semantics (batch 32, reshuffled every epoch, class-weighted loss, early stopping
    on the validation loss with patience 5, best weights restored) in a compiled loop: Keras'
    own per-epoch overhead made the baseline too slow to benchmark."""
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    variables = model.trainable_variables

    @tf.function
    def epoch(xs: tf.Tensor, ys: tf.Tensor, ws: tf.Tensor) -> None:
        n = tf.shape(xs)[0]
        for start in tf.range(0, n, 32):
            xb, yb, wb = xs[start : start + 32], ys[start : start + 32], ws[start : start + 32]
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(loss_fn(yb, model(xb, training=True)) * wb)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    @tf.function
    def val_loss(xs: tf.Tensor, ys: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(loss_fn(ys, model(xs, training=False)))

    rng = np.random.default_rng(seed)
    best, best_weights, waited, epochs = np.inf, model.get_weights(), 0, 0
    for epochs in range(1, 501):  # noqa: B007 - the count is returned
        order = rng.permutation(len(x))
        epoch(tf.constant(x[order]), tf.constant(y[order]), tf.constant(weights[y[order]]))
        loss = float(val_loss(tf.constant(val[0]), tf.constant(val[1])))
        if loss < best:
            best, best_weights, waited = loss, model.get_weights(), 0
        else:
            waited += 1
            if waited >= 5:
                break
    model.set_weights(best_weights)
    return epochs


def train(gestures: list[tuple[str, Frames]], parent: SeedModel | None = None, seed: int = 0) -> SeedModel:
    """Train on every gesture's frames (the parent's gestures first), as the seed did."""
    keras.utils.set_random_seed(seed)
    x = app_view(np.concatenate([f for _, f in gestures]))
    y = np.concatenate([np.full(len(f), i) for i, (_, f) in enumerate(gestures)]).astype(np.int32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(1, int(0.2 * len(x)))
    val, fit = order[:n_val], order[n_val:]
    counts = np.bincount(y[fit], minlength=len(gestures))
    class_weights = (len(fit) / (len(gestures) * np.maximum(counts, 1))).astype(np.float32)
    model = build(len(gestures), parent, seed)
    epochs = _fit(model, x[fit], y[fit], class_weights, (x[val], y[val]), seed)
    originals = np.concatenate([f for _, f in gestures])
    return SeedModel(
        labels=[name for name, _ in gestures],
        model=model,
        tflite_uint8=export_uint8(model, originals),
        frames=dict(gestures),
        epochs=epochs,
    )


def is_duplicate(parent: SeedModel, frames: Frames, tolerance: float = EXACT_TOLERANCE) -> bool:
    """The seed's check: most new frames are near-exact copies of one existing gesture's frames."""
    for known in parent.frames.values():
        close = np.abs(frames[:, None, :] - known[None, :, :]).max(axis=2) <= tolerance
        if np.mean(close.any(axis=1)) >= EXACT_SHARE:
            return True
    return False
