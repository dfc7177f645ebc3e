"""Gestures that differ only by orientation stay apart, while the same gesture is recognized
across hands, sizes and moderate turns (synthetic hands, the exported uint8 model)."""

from __future__ import annotations

import numpy as np
import pytest

from ghostouch.engine import hands
from ghostouch.engine.trainer import GestureFrames, TrainedModel, train_gesture_model
from ghostouch.engine.verify import LiteModel

GESTURES = ("thumbs_up", "thumbs_down", "point_left", "point_right", "paper", "rock")


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    rng = np.random.default_rng(7)
    # One recording per gesture, all with the right hand, as one user would make them.
    gestures = [GestureFrames(name, hands.generate_recording(name, 100, rng, handedness=1.0)) for name in GESTURES]
    return train_gesture_model(gestures)


def decisions(model: TrainedModel, frames: np.ndarray) -> np.ndarray:
    proba = LiteModel.load(model.tflite_uint8).predict_proba(frames)
    return np.where(proba.max(axis=1) >= 0.5, proba.argmax(axis=1), -1)


@pytest.mark.parametrize("name", GESTURES)
def test_each_gesture_is_recognized_on_new_hands(trained: TrainedModel, name: str) -> None:
    rng = np.random.default_rng(11)
    frames = hands.generate_pose(name, 150, rng, handedness=1.0)
    assert np.mean(decisions(trained, frames) == GESTURES.index(name)) >= 0.85


@pytest.mark.parametrize(
    ("name", "opposite", "handedness"),
    [
        ("thumbs_up", "thumbs_down", None),  # either hand: a left thumbs-up is a mirrored right one
        ("thumbs_down", "thumbs_up", None),
        ("point_left", "point_right", 1.0),  # image directions: the hand that recorded them
        ("point_right", "point_left", 1.0),
    ],
)
def test_orientation_twins_are_not_confused(
    trained: TrainedModel, name: str, opposite: str, handedness: float | None
) -> None:
    rng = np.random.default_rng(13)
    frames = hands.generate_pose(name, 200, rng, handedness=handedness)
    got = decisions(trained, frames)
    assert np.mean(got == GESTURES.index(opposite)) <= 0.02
    assert np.mean(got == GESTURES.index(name)) >= 0.8


def test_a_moderate_turn_keeps_the_gesture(trained: TrainedModel) -> None:
    """Turned in the image by up to 40 degrees, thumbs-up is still thumbs-up."""
    rng = np.random.default_rng(17)
    frames = hands.generate_pose("thumbs_up", 150, rng, handedness=1.0)
    angle = np.radians(rng.uniform(-40.0, 40.0, len(frames)))
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    pts = frames[:, :63].reshape(-1, 21, 3).copy()
    x, y = pts[:, :, 0].copy(), pts[:, :, 1].copy()
    pts[:, :, 0], pts[:, :, 1] = c * x - s * y, s * x + c * y
    frames[:, :63] = pts.reshape(-1, 63)
    assert np.mean(decisions(trained, frames) == GESTURES.index("thumbs_up")) >= 0.85
