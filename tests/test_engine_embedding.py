"""The shipped pose embedding, its training code, orientation twins and the 2-D familiarity gate
(synthetic hands)."""

from __future__ import annotations

import numpy as np
import pytest

from ghostouch.engine import features, hand_poses, hands, negatives, pose_embedding
from ghostouch.engine import gate as gating
from ghostouch.engine.augment import finger_curl, flatten_depth, mirrored_points, palm_axes
from ghostouch.engine.trainer import GestureFrames, mirrored, train_gesture_model
from ghostouch.engine.twins import orientation_twins, reoriented
from ghostouch.engine.verify import LiteModel
from tests.conftest import index_little_angle

NAMES = ("paper", "rock", "scissors", "one", "ok", "call", "thumbs_up", "three")


def embedded(frames: np.ndarray) -> np.ndarray:
    return features.features(frames, ("embedding",))


def test_shipped_embedding_gives_unit_vectors_that_ignore_pose_placement() -> None:
    frames = hands.generate_pose("ok", 40, np.random.default_rng(1))
    base = embedded(frames)
    assert base.shape == (40, pose_embedding.DIMENSIONS)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-4)
    moved = frames.copy()
    moved[:, :63] = moved[:, :63] * 0.8 + 0.01
    for other in (moved, mirrored(frames)):
        assert np.allclose(embedded(other), base, atol=1e-3)


def test_re_recordings_of_a_pose_embed_closer_than_other_poses() -> None:
    rng = np.random.default_rng(2)
    first = {n: embedded(hands.generate_recording(n, 60, rng)) for n in NAMES}
    for name in NAMES:
        again = embedded(hands.generate_pose(name, 60, rng, handedness=0.0))
        to = {n: float(np.median(negatives.nearest_distance(again, e))) for n, e in first.items()}
        assert min(to, key=lambda n: to[n]) == name, to


def test_training_code_learns_to_pair_views() -> None:
    arrays = pose_embedding.train(pairs=4000, steps=150, seed=3, batch=256)
    assert arrays["layer_0"].shape == (pose_embedding.N_INPUTS, pose_embedding.HIDDEN[0])
    assert arrays["layer_5"].shape == (pose_embedding.DIMENSIONS,)
    a, b = pose_embedding.training_pairs(500, np.random.default_rng(4))

    za, zb = pose_embedding.embed(a, arrays), pose_embedding.embed(b, arrays)
    same = np.linalg.norm(za - zb, axis=1)
    other = np.linalg.norm(za - np.roll(zb, 1, axis=0), axis=1)
    assert np.median(same) < 0.6 * np.median(other)


def test_views_can_also_differ_by_finger_fan_and_knuckle_bend() -> None:
    angles = hand_poses.random_angles(300, np.random.default_rng(5))
    flat = np.zeros(300, bool)

    def spread_and_curl(**variation: float) -> tuple[np.ndarray, np.ndarray]:
        frames = pose_embedding._views(angles, flat, np.random.default_rng(6), 0.0, **variation)
        return index_little_angle(frames), finger_curl(mirrored_points(frames)[0], 2)

    # Baselines with the same random draws (a vanishing range), so only the option differs.
    plain_spread, plain_curl = spread_and_curl(fan_deg=1e-9)
    fanned_spread, fanned_curl = spread_and_curl(fan_deg=25.0)
    assert np.std(fanned_spread - plain_spread) > 3.0  # measured 6.2
    assert np.abs(fanned_curl - plain_curl).max() < 1e-6  # fanning leaves the curl alone
    _, plain_curl = spread_and_curl(knuckle_deg=1e-9)
    _, bent_curl = spread_and_curl(knuckle_deg=30.0)
    assert np.std(bent_curl - plain_curl) > 8.0  # measured 15.6


def test_orientation_twins_are_found_and_swapped_into_each_other() -> None:
    rng = np.random.default_rng(5)
    names = ("thumbs_up", "thumbs_down", "paper", "point_left", "point_right", "rock")
    sets = [hands.generate_recording(n, 80, rng, handedness=1.0) for n in names]
    assert orientation_twins(sets) == [(0, 1), (3, 4)]
    turned = reoriented(sets[1], sets[0], 50, np.random.default_rng(6))
    # thumbs_down's shape ...
    assert np.median(negatives.nearest_distance(negatives.shape(turned), negatives.shape(sets[1]))) < 0.05
    # ... lying like thumbs_up: the palm axes match one of thumbs_up's frames.
    axes = np.stack(palm_axes(turned[:, :63].reshape(-1, 21, 3).astype(np.float64)), axis=1).reshape(50, 9)
    up = np.stack(palm_axes(sets[0][:, :63].reshape(-1, 21, 3).astype(np.float64)), axis=1).reshape(80, 9)
    assert negatives.nearest_distance(axes.astype(np.float32), up.astype(np.float32)).max() == pytest.approx(
        0, abs=1e-3
    )


def test_2d_models_are_gated_and_say_no_gesture_far_from_their_recordings() -> None:
    rng = np.random.default_rng(8)
    names = ("paper", "rock", "scissors", "one")
    flat = [flatten_depth(hands.generate_recording(n, 100, rng, handedness=1.0)) for n in names]
    model = train_gesture_model([GestureFrames(n, f) for n, f in zip(names, flat, strict=True)])
    assert model.gate is not None
    lite = LiteModel.load(model.tflite_uint8)
    for i, name in enumerate(names):
        proba = lite.predict_proba(flatten_depth(hands.generate_recording(name, 100, rng, handedness=1.0)))
        assert np.mean((proba.argmax(axis=1) == i) & (proba.max(axis=1) >= 0.5)) >= 0.8, name
    stranger = flatten_depth(hands.generate_recording("call", 100, rng, handedness=1.0))
    assert np.mean(gating.distance(model.gate, features.features(stranger, gating.KINDS)) > 1.0) >= 0.9
    assert np.mean(lite.predict_proba(stranger).max(axis=1) >= 0.5) <= 0.1


def test_2d_models_keep_the_orientation_only_for_orientation_twins() -> None:
    rng = np.random.default_rng(9)
    names = ("thumbs_up", "thumbs_down", "paper", "rock")
    flat = {n: flatten_depth(hands.generate_recording(n, 100, rng, handedness=1.0)) for n in names}
    model = train_gesture_model([GestureFrames(n, flat[n]) for n in names])
    assert model.metrics["features"] == list(features.FLAT_KINDS)
    assert model.metrics["orientation_twins"] == [["thumbs_up", "thumbs_down"]]
    lite = LiteModel.load(model.tflite_uint8)
    for i, name in enumerate(names[:2]):
        proba = lite.predict_proba(flatten_depth(hands.generate_recording(name, 100, rng, handedness=1.0)))
        assert np.mean((proba.argmax(axis=1) == i) & (proba.max(axis=1) >= 0.5)) >= 0.8, name
    shapes_only = train_gesture_model([GestureFrames(n, flat[n]) for n in names[1:]])
    assert shapes_only.metrics["features"] == list(features.FLAT_SHAPE_KINDS)
