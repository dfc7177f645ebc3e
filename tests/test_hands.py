"""Tests of the kinematic synthetic hand generator."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from ghostouch.engine.hand_poses import N_ANGLES, POSES
from ghostouch.engine.hands import (
    POSE_NAMES,
    generate_pose,
    generate_recording,
    hand_from_angles,
    random_poses,
)

Frames = npt.NDArray[np.float32]
Maker = Callable[[np.random.Generator], Frames]
TIPS = (8, 12, 16, 20)


def landmarks(frames: Frames) -> npt.NDArray[np.float64]:
    return frames[:, :63].reshape(-1, 21, 3).astype(np.float64)


def distance(frames: Frames, a: int, b: int) -> npt.NDArray[np.float64]:
    points = landmarks(frames)
    return np.asarray(np.linalg.norm(points[:, a] - points[:, b], axis=1))


def normalized(frames: Frames) -> npt.NDArray[np.float64]:
    """Wrist-centred landmarks scaled to unit RMS distance from their centroid, flattened."""
    points = landmarks(frames)
    points -= points[:, :1]
    spread = points - points.mean(axis=1, keepdims=True)
    points /= np.sqrt(np.mean(np.sum(spread**2, axis=2), axis=1))[:, None, None]
    return points.reshape(len(frames), -1)


def test_pose_names_cover_the_required_poses() -> None:
    required = {
        "paper", "rock", "scissors", "one", "three", "four", "ok", "call", "thumbs_up",
        "thumbs_down", "point_left", "point_right", "pinch", "rock_on",
    }  # fmt: skip
    assert required <= set(POSE_NAMES)
    assert len(set(POSE_NAMES)) == len(POSE_NAMES)


@pytest.mark.parametrize("name", POSE_NAMES)
def test_frames_have_the_app_format(name: str) -> None:
    frames = generate_pose(name, 200, np.random.default_rng(1))
    assert frames.shape == (200, 64)
    assert frames.dtype == np.float32
    assert np.all(np.isfinite(frames))
    assert set(np.unique(frames[:, 63])) == {0.0, 1.0}
    assert np.max(np.abs(frames[:, :63])) < 0.15


def _paper(rng: np.random.Generator) -> Frames:
    return generate_pose("paper", 300, rng)


def _rock_recording(rng: np.random.Generator) -> Frames:
    return generate_recording("rock", 300, rng)


def _random(rng: np.random.Generator) -> Frames:
    return random_poses(300, rng)


@pytest.mark.parametrize("make", [_paper, _rock_recording, _random])
def test_origin_near_landmark_9_and_realistic_size(make: Maker) -> None:
    frames = make(np.random.default_rng(2))
    points = landmarks(frames)
    assert np.mean(np.linalg.norm(points[:, 9], axis=1)) < 0.015
    assert 0.07 < np.median(distance(frames, 0, 9)) < 0.11
    assert np.max(np.abs(frames[:, :63])) < 0.15


def test_fixed_handedness() -> None:
    rng = np.random.default_rng(3)
    assert np.all(generate_pose("one", 50, rng, handedness=0.0)[:, 63] == 0.0)
    assert np.all(generate_pose("one", 50, rng, handedness=1.0)[:, 63] == 1.0)
    assert np.all(generate_recording("one", 50, rng, handedness=0.0)[:, 63] == 0.0)
    with pytest.raises(ValueError):
        generate_pose("one", 5, rng, handedness=0.5)


def test_same_seed_same_frames() -> None:
    for make in (_paper, _rock_recording, _random):
        a = make(np.random.default_rng(7))
        b = make(np.random.default_rng(7))
        c = make(np.random.default_rng(8))
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_y_points_down() -> None:
    rng = np.random.default_rng(4)
    paper = landmarks(generate_pose("paper", 300, rng))
    for tip in TIPS:
        assert np.all(paper[:, tip, 1] < paper[:, 0, 1])
    up = landmarks(generate_pose("thumbs_up", 300, rng))
    down = landmarks(generate_pose("thumbs_down", 300, rng))
    assert np.all(up[:, 4, 1] < up[:, 0, 1])
    assert np.all(down[:, 4, 1] > down[:, 0, 1])


def test_pointing_follows_the_image_direction_for_both_hands() -> None:
    rng = np.random.default_rng(5)
    for hand in (0.0, 1.0):
        left = landmarks(generate_pose("point_left", 200, rng, handedness=hand))
        right = landmarks(generate_pose("point_right", 200, rng, handedness=hand))
        assert np.all(left[:, 8, 0] < left[:, 5, 0] - 0.03)
        assert np.all(right[:, 8, 0] > right[:, 5, 0] + 0.03)


def test_orientation_pairs_share_their_finger_angles() -> None:
    assert POSES["thumbs_up"].angles == POSES["thumbs_down"].angles
    assert POSES["point_left"].angles == POSES["point_right"].angles


def test_left_hand_mirrors_the_right_hand() -> None:
    for name, partner in [
        ("paper", "paper"),
        ("thumbs_up", "thumbs_up"),
        ("point_left", "point_right"),
    ]:
        left = generate_pose(name, 100, np.random.default_rng(9), handedness=0.0)
        right = generate_pose(partner, 100, np.random.default_rng(9), handedness=1.0)
        mirrored = right.copy()
        mirrored[:, 0:63:3] *= -1.0
        mirrored[:, 63] = 0.0
        np.testing.assert_allclose(left, mirrored, atol=1e-7)


def test_left_hand_has_the_mirrored_chirality() -> None:
    """Right hands: (landmark 9 - wrist) x (landmark 17 - landmark 5) points to the palm side,
    where curled fingers go; left hands the opposite (as in real MediaPipe data)."""
    rng = np.random.default_rng(10)
    for hand, sign in ((1.0, 1.0), (0.0, -1.0)):
        points = landmarks(generate_pose("rock", 200, rng, handedness=hand))
        normal = np.cross(points[:, 9] - points[:, 0], points[:, 17] - points[:, 5])
        palm_side = points[:, (12, 16, 20)].mean(1) - points[:, (9, 13, 17)].mean(1)
        assert np.all(sign * np.sum(normal * palm_side, axis=1) > 0)


def test_hand_from_angles_mirror_and_bone_lengths() -> None:
    angles = np.array(POSES["three"].angles)
    right = hand_from_angles(angles, handedness=1.0)
    left = hand_from_angles(angles, handedness=0.0)
    np.testing.assert_allclose(left[:, 0:63:3], -right[:, 0:63:3])
    np.testing.assert_allclose(left[:, 1:63:3], right[:, 1:63:3])
    assert left[0, 63] == 0.0 and right[0, 63] == 1.0
    # Joint angles move bones, never stretch them.
    bent = hand_from_angles(np.full(N_ANGLES, 40.0), size=1.1)
    straight = hand_from_angles(np.zeros(N_ANGLES), size=1.1)
    for a, b in [(5, 6), (6, 7), (7, 8), (9, 10), (17, 18), (1, 2), (2, 3), (3, 4)]:
        np.testing.assert_allclose(distance(bent, a, b), distance(straight, a, b), rtol=1e-5)
    assert np.all(np.abs(straight[0, :63].reshape(21, 3)[9]) < 1e-9)
    with pytest.raises(ValueError):
        hand_from_angles(np.zeros(N_ANGLES - 1))


def test_fingertips_far_in_paper_near_in_rock() -> None:
    rng = np.random.default_rng(11)
    paper = generate_pose("paper", 300, rng)
    rock = generate_pose("rock", 300, rng)
    for tip in TIPS:
        assert np.median(distance(paper, 0, tip)) > 0.13
        assert np.median(distance(rock, 0, tip)) < 0.09
    assert np.median(distance(rock, 0, 8)) < 0.6 * np.median(distance(paper, 0, 8))


def test_extended_fingers_match_the_pose_description() -> None:
    rng = np.random.default_rng(12)
    extended = {
        "one": {8}, "scissors": {8, 12}, "three": {8, 12}, "four": {8, 12, 16, 20},
        "call": {20}, "rock_on": {8, 20}, "ok": {12, 16, 20}, "pinch": set(),
    }  # fmt: skip
    for name, tips in extended.items():
        frames = generate_pose(name, 200, rng)
        for tip in TIPS:
            ratio = np.median(distance(frames, 0, tip) / distance(frames, 0, 9))
            assert (ratio > 1.45) == (tip in tips), (name, tip, ratio)
    for name in ("ok", "pinch"):
        assert np.median(distance(generate_pose(name, 200, rng), 4, 8)) < 0.02
    assert np.median(distance(generate_pose("paper", 200, rng), 4, 8)) > 0.06


def test_poses_are_distinct() -> None:
    """Nearest centroid (one centroid per pose and handedness, since a left hand is a mirror
    image and point_left/point_right are defined in the image) on fresh frames."""
    centroids = {
        hand: np.stack(
            [
                normalized(generate_pose(name, 400, np.random.default_rng(13), handedness=hand)).mean(0)
                for name in POSE_NAMES
            ]
        )
        for hand in (0.0, 1.0)
    }
    rng = np.random.default_rng(14)
    for k, name in enumerate(POSE_NAMES):
        frames = generate_pose(name, 300, rng)
        test = normalized(frames)
        nearest = np.where(
            frames[:, 63] == 1.0,
            np.argmin(np.linalg.norm(test[:, None] - centroids[1.0][None], axis=2), axis=1),
            np.argmin(np.linalg.norm(test[:, None] - centroids[0.0][None], axis=2), axis=1),
        )
        accuracy = np.mean(nearest == k)
        assert accuracy > 0.95, (name, accuracy, np.bincount(nearest, minlength=len(POSE_NAMES)))


def test_recording_frames_are_strongly_correlated() -> None:
    rng = np.random.default_rng(15)
    for name in ("paper", "scissors", "pinch"):
        recording = generate_recording(name, 90, rng)
        assert recording.shape == (90, 64)
        assert len(np.unique(recording[:, 63])) == 1
        step = np.linalg.norm(np.diff(recording[:, :63], axis=0), axis=1)
        poses = generate_pose(name, 90, rng)
        spread = np.linalg.norm(poses[1:, :63] - poses[:-1, :63], axis=1)
        assert np.mean(step) < 0.5 * np.mean(spread)
        # One hand: its size barely changes over the recording.
        size = distance(recording, 0, 9)
        assert np.std(size) / np.mean(size) < 0.05


def test_random_poses_are_varied() -> None:
    frames = random_poses(500, np.random.default_rng(16))
    assert frames.shape == (500, 64) and frames.dtype == np.float32
    assert np.all(np.isfinite(frames))
    assert set(np.unique(frames[:, 63])) == {0.0, 1.0}
    ratio = distance(frames, 0, 8) / distance(frames, 0, 9)
    assert np.min(ratio) < 1.0 < 1.6 < np.max(ratio)
    # Orientations cover the image plane: the hand axis points every way.
    axis = landmarks(frames)[:, 9] - landmarks(frames)[:, 0]
    assert np.min(axis[:, 0]) < -0.05 and np.max(axis[:, 0]) > 0.05
    assert np.min(axis[:, 1]) < -0.05 and np.max(axis[:, 1]) > 0.05


def test_unknown_pose_raises() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="paper"):
        generate_pose("jazz_hands", 3, rng)
    with pytest.raises(ValueError, match="rock"):
        generate_recording("jazz_hands", 3, rng)
    with pytest.raises(ValueError):
        generate_pose("paper", 3, rng, orientation="sideways")  # type: ignore[arg-type]


def test_variation_controls_the_spread() -> None:
    tight = normalized(generate_pose("three", 300, np.random.default_rng(17), variation=0.2))
    loose = normalized(generate_pose("three", 300, np.random.default_rng(17), variation=1.5))
    assert np.mean(np.std(tight, axis=0)) < 0.6 * np.mean(np.std(loose, axis=0))


def test_zero_frames_and_landmark_noise() -> None:
    rng = np.random.default_rng(18)
    for frames in (generate_pose("paper", 0, rng), generate_recording("rock", 0, rng)):
        assert frames.shape == (0, 64) and frames.dtype == np.float32
    assert random_poses(0, rng).shape == (0, 64)
    # Without pose or orientation variation, what remains is a few mm of MediaPipe-like noise.
    still = landmarks(generate_pose("paper", 500, rng, variation=0.0, handedness=1.0))
    assert 0.001 < float(np.mean(np.std(still[:, 9], axis=0))) < 0.006
