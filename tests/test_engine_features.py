"""The in-graph features: what they ignore, what they keep, and that the uint8 export keeps them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ghostouch.engine import features, hands
from ghostouch.engine.export import _quiet, calibration_frames
from ghostouch.engine.frames import app_view
from ghostouch.engine.trainer import mirrored
from ghostouch.engine.verify import LiteModel


def turned(frames: np.ndarray, degrees: float) -> np.ndarray:
    """Frames turned in the image plane about the origin."""
    a = np.radians(degrees)
    pts = frames[:, :63].reshape(-1, 21, 3).copy()
    x, y = pts[:, :, 0].copy(), pts[:, :, 1].copy()
    pts[:, :, 0], pts[:, :, 1] = np.cos(a) * x - np.sin(a) * y, np.sin(a) * x + np.cos(a) * y
    out = frames.copy()
    out[:, :63] = pts.reshape(-1, 63)
    return out


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return hands.generate_pose("ok", 50, np.random.default_rng(3), handedness=1.0)


def test_distances_ignore_position_size_turns_and_hand(frames: np.ndarray) -> None:
    base = features.features(frames, ("distances",))
    moved = frames.copy()
    moved[:, :63] = moved[:, :63] * 0.8 + 0.01
    for other in (moved, turned(frames, 70.0), mirrored(frames)):
        assert np.allclose(features.features(other, ("distances",)), base, atol=1e-4)


def test_palm_keeps_orientation_but_not_hand(frames: np.ndarray) -> None:
    base = features.features(frames, ("palm",))
    assert np.allclose(features.features(mirrored(frames), ("palm",)), base, atol=1e-5)
    assert np.abs(features.features(turned(frames, 180.0), ("palm",)) - base).max() > 0.5


def test_sizes_match_the_declared_ones(frames: np.ndarray) -> None:
    for kinds in (("coords",), ("distances",), ("palm",), features.DEFAULT_KINDS):
        assert features.features(frames, kinds).shape == (len(frames), features.n_features(kinds))


def _uint8_features(frames: np.ndarray) -> np.ndarray:
    """The default features as computed by a fully int8 TFLite model, like the exported ones."""

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def serve(x: tf.Tensor) -> tf.Tensor:
        return features.tf_features(x)

    calib = calibration_frames(np.concatenate([frames, mirrored(frames)]))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None, :]] for row in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with _quiet():
        model = LiteModel.load(bytes(converter.convert()))
    return model.predict_proba(frames)  # dequantized outputs, one frame at a time


def test_uint8_export_keeps_the_features() -> None:
    rng = np.random.default_rng(5)
    frames = np.concatenate([hands.generate_pose(name, 40, rng) for name in ("paper", "rock", "ok", "thumbs_up")])
    exact = features.features(app_view(frames))
    got = _uint8_features(frames)
    error = np.abs(got - exact)
    # Distances reach about 7 and palm vectors about 5 (units of the hand's RMS size).
    assert np.median(error) < 0.06
    assert np.percentile(error, 99) < 0.3
