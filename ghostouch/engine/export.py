"""TFLite export of trained weights: the legacy uint8 model and a float-I/O variant.

`convert_uint8` (full integer quantization, calibrated) is what the original server did; the
seed-style baseline of the benchmark still uses it. The engine exports with `export_uint8`.
"""

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

from ghostouch.engine.frames import INPUT_MAX, INPUT_MIN, INPUT_SCALE, INPUT_ZERO_POINT, OUTPUT_SCALE, app_view
from ghostouch.engine.gate import Gate
from ghostouch.engine.model import Weights, tf_logits


def _constants(weights: Weights, gate: Gate | None) -> tuple[list[tf.Tensor], tuple[tf.Tensor, tf.Tensor] | None]:
    layers = [tf.constant(w) for w in weights]
    return layers, None if gate is None else (tf.constant(gate.prototypes), tf.constant(gate.inverse_radius))


def _concrete_function(weights: Weights, gate: Gate | None = None) -> tf.types.experimental.ConcreteFunction:
    constants, gate_constants = _constants(weights, gate)

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="landmarks")])
    def serve(x: tf.Tensor) -> tf.Tensor:
        # The range the legacy apps clamp to, and the model was trained on (`frames.app_view`):
        # a float-input app then gets the same answer for a frame as a legacy one.
        x = tf.clip_by_value(x, INPUT_MIN, INPUT_MAX)
        return tf.nn.softmax(tf_logits(x, constants, gate_constants))

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


def export_uint8(weights: Weights, gate: Gate | None = None) -> bytes:
    """The legacy apps' model: uint8 [1, 64] in, uint8 [1, N] softmax out.

    Only its boundary is uint8. Inside, it dequantizes the apps' input exactly as they quantized
    it (1 mm per step, `frames.INPUT_SCALE`), computes the trained float32 graph, and rounds the
    probabilities to the output's 1/256 steps itself. So the phone decides as the trained model
    does on every frame: integer internals (the converter's full quantization) changed the
    decision on 1-1.5 % of the 2-D benchmark's frames, and save nothing worth having on a model
    of about 10 k multiply-adds. The converter cannot give uint8 tensors to a float graph, so
    the graph takes and returns raw uint8 values and the quantization parameters the apps read
    are written into the two tensors afterwards (`_set_quantization`).
    """
    constants, gate_constants = _constants(weights, gate)

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.uint8, name="landmarks")])
    def serve(q: tf.Tensor) -> tf.Tensor:
        x = (tf.cast(q, tf.float32) - float(INPUT_ZERO_POINT)) * INPUT_SCALE
        p = tf.nn.softmax(tf_logits(x, constants, gate_constants))
        steps = tf.clip_by_value(tf.round(p / OUTPUT_SCALE), 0.0, 255.0)
        return tf.cast(steps, tf.uint8)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    with _quiet():
        content = bytes(converter.convert())
    return _set_quantization(content, (INPUT_SCALE, INPUT_ZERO_POINT), (OUTPUT_SCALE, 0))


def _set_quantization(content: bytes, inputs: tuple[float, int], outputs: tuple[float, int]) -> bytes:
    """`content` with (scale, zero point) written into its input and output tensors."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    for tensors, (scale, zero_point) in ((graph.inputs, inputs), (graph.outputs, outputs)):
        for index in tensors:
            params = schema.QuantizationParametersT()
            params.scale, params.zeroPoint = [scale], [zero_point]
            graph.tensors[index].quantization = params
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def export_float(weights: Weights, gate: Gate | None = None) -> bytes:
    """Float32 [1, 64] in, float32 [1, N] out, int8 weights (for apps that send raw floats)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete_function(weights, gate)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with _quiet():
        return bytes(converter.convert())
