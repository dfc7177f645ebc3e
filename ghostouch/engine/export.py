"""TFLite export of trained weights: the legacy uint8 model and a float-I/O variant."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from ghostouch.engine.frames import INPUT_MAX, INPUT_MIN, app_view
from ghostouch.engine.model import Weights, tf_logits


def _concrete_function(weights: Weights) -> tf.types.experimental.ConcreteFunction:
    constants = [tf.constant(w) for w in weights]

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="landmarks")])
    def serve(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf_logits(x, constants))

    return serve.get_concrete_function()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter prints a 'Saved artifact' block on every call; keep job logs readable."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        # "Statistics for quantized inputs were expected": the input range comes from calibration.
        warnings.simplefilter("ignore", UserWarning)
        yield


def calibration_frames(frames: npt.NDArray[np.float32], limit: int = 300) -> npt.NDArray[np.float32]:
    """Representative inputs: frames as the apps deliver them, plus two that pin the input range.

    Two real frames get one coordinate moved to the edges of the apps' clamped range, so the
    converter derives exactly the input quantization in `frames.py` (1 mm per step) without
    distorting the calibration of any internal tensor.
    """
    rng = np.random.default_rng(0)
    pick = rng.choice(len(frames), size=min(limit, len(frames)), replace=False)
    calib = app_view(frames[pick])
    pins = calib[:2].copy()
    pins[0, 2], pins[1, 2] = INPUT_MIN, INPUT_MAX
    return np.concatenate([pins, calib]).astype(np.float32)


def convert_uint8(function: tf.types.experimental.ConcreteFunction, frames: npt.NDArray[np.float32]) -> bytes:
    """Fully integer-quantize a [1, 64] -> [1, N] function: uint8 in and out, calibrated on `frames`."""
    calib = calibration_frames(frames)

    def representative() -> Iterator[list[npt.NDArray[np.float32]]]:
        for row in calib:
            yield [row[None, :]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with _quiet():
        return bytes(converter.convert())


def export_uint8(weights: Weights, frames: npt.NDArray[np.float32]) -> bytes:
    """The legacy apps' model: uint8 [1, 64] in, uint8 [1, N] softmax out."""
    return convert_uint8(_concrete_function(weights), frames)


def export_float(weights: Weights) -> bytes:
    """Float32 [1, 64] in, float32 [1, N] out, int8 weights (for apps that send raw floats)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete_function(weights)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with _quiet():
        return bytes(converter.convert())
