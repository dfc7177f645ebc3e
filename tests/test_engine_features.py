"""The in-graph features: what they ignore, what they keep, and that the uint8 export computes them exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ghostouch.engine import features, hands
from ghostouch.engine.export import export_uint8
from ghostouch.engine.frames import INPUT_SCALE, INPUT_ZERO_POINT, app_view
from ghostouch.engine.model import TrainConfig, init_weights, predict_proba
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
    for kinds in (
        ("coords",),
        ("distances",),
        ("palm",),
        features.DEFAULT_KINDS,
        features.FLAT_KINDS,
        features.FLAT_SHAPE_KINDS,
    ):
        assert features.features(frames, kinds).shape == (len(frames), features.n_features(kinds))
    for kinds in (features.DEFAULT_KINDS, features.FLAT_KINDS, features.FLAT_SHAPE_KINDS):
        assert features.kinds_for(features.n_features(kinds)) == kinds


def test_legacy_export_decides_like_the_trained_model() -> None:
    """The uint8 model computes in float32 on the apps' dequantized input: its probabilities
    are the trained model's, rounded to the output's 1/256 steps."""
    rng = np.random.default_rng(5)
    frames = np.concatenate([hands.generate_pose(name, 40, rng) for name in ("paper", "rock", "ok", "thumbs_up")])
    frames = np.concatenate([frames, mirrored(frames)])
    weights = init_weights(features.n_features(), 4, TrainConfig(hidden=(16,), seed=2))
    weights = [w * 4.0 for w in weights]  # confident outputs, not all near 1/4
    lite = LiteModel.load(export_uint8(weights))
    assert lite.input_quant == (pytest.approx(INPUT_SCALE), INPUT_ZERO_POINT)
    assert lite.output_quant == (pytest.approx(1 / 256), 0)
    exact = predict_proba(weights, app_view(frames))
    got = lite.predict_proba(frames)
    assert np.abs(got - np.minimum(exact, 255 / 256)).max() <= 0.5 / 256 + 1e-4
    assert np.mean(exact.max(axis=1) >= 0.6) > 0.3  # the comparison covers confident outputs
