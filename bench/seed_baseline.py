"""A re-implementation of the seed project's trainer, as the accuracy benchmark's baseline.

From its description: raw 64 frame values as features; a Conv1D feature extractor, warm-started
from the parent model; a new dense head (128 relu, dropout 0.3, softmax); Adam 1e-3, batch 32,
up to 500 epochs with early stopping (patience 5) on a random 20 % validation split, balanced
class weights. Its duplicate check only catches near-exact copies of the parent's frames
(absolute tolerance 5e-5). The model is exported to the same uint8 TFLite contract as ours.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf

from ghostouch.engine.export import _quiet, calibration_frames
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
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def export_uint8(model: keras.Model, frames: Frames) -> bytes:
    calib = calibration_frames(frames)

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="landmarks")])
    def serve(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def representative() -> Iterator[list[Frames]]:
        for row in calib:
            yield [row[None, :]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with _quiet():
        return bytes(converter.convert())


def train(gestures: list[tuple[str, Frames]], parent: SeedModel | None = None, seed: int = 0) -> SeedModel:
    """Train on every gesture's frames (the parent's gestures first), as the seed did."""
    keras.utils.set_random_seed(seed)
    x = app_view(np.concatenate([f for _, f in gestures]))
    y = np.concatenate([np.full(len(f), i) for i, (_, f) in enumerate(gestures)])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(1, int(0.2 * len(x)))
    val, fit = order[:n_val], order[n_val:]
    counts = np.bincount(y[fit], minlength=len(gestures))
    weights = {i: len(fit) / (len(gestures) * max(c, 1)) for i, c in enumerate(counts)}
    model = build(len(gestures), parent, seed)
    stop = keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    history = model.fit(
        x[fit], y[fit], validation_data=(x[val], y[val]), batch_size=32, epochs=500,
        class_weight=weights, callbacks=[stop], verbose=0, shuffle=True,
    )  # fmt: skip
    originals = np.concatenate([f for _, f in gestures])
    return SeedModel(
        labels=[name for name, _ in gestures],
        model=model,
        tflite_uint8=export_uint8(model, originals),
        frames=dict(gestures),
        epochs=len(history.history["loss"]),
    )


def is_duplicate(parent: SeedModel, frames: Frames, tolerance: float = EXACT_TOLERANCE) -> bool:
    """The seed's check: most new frames are near-exact copies of one existing gesture's frames."""
    for known in parent.frames.values():
        close = np.abs(frames[:, None, :] - known[None, :, :]).max(axis=2) <= tolerance
        if np.mean(close.any(axis=1)) >= EXACT_SHARE:
            return True
    return False
