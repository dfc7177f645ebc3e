"""Frame validation, the apps' quantization and normalization (no services needed)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from ghostouch.engine import hand_poses, hands
from ghostouch.engine.frames import (
    INPUT_MAX,
    INPUT_MIN,
    FrameError,
    _bone_ratio,
    app_quantize,
    app_view,
    check_frames,
    frame_problem,
    landmarks,
    layout_problem,
    normalize,
)
from ghostouch.engine.hand_poses import POSES

PAPER = hands.generate_pose("paper", 1, np.random.default_rng(0), handedness=1.0)[0]


def good_frame(handedness: float = 1.0) -> list[float]:
    return [float(v) for v in PAPER[:63]] + [handedness]


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ([0.0] * 63, "expected 64 numbers"),
        ("abc", "expected a list of 64 numbers"),
        ([0.0] * 62 + [math.nan, 1.0], "not a finite number"),
        ([0.0] * 62 + [math.inf, 1.0], "not a finite number"),
        ([0.0] * 10 + ["x"] + [0.0] * 52 + [1.0], "not a number"),
        ([0.0] * 10 + [True] + [0.0] * 52 + [1.0], "not a number"),
        ([0.0] * 5 + [0.5] + [0.0] * 57 + [1.0], "world"),
        ([0.0] * 63 + [0.5], "handedness"),
    ],
)
def test_frame_problems_name_index_and_cause(frame: object, fragment: str) -> None:
    problem = frame_problem(7, frame)
    assert problem is not None and problem.startswith("frame 7") and fragment in problem


def test_valid_frames_pass_and_become_float32() -> None:
    arr = check_frames([good_frame(0.0), good_frame(1.0)] * 10, 20, 30)
    assert arr.shape == (20, 64) and arr.dtype == np.float32
    assert frame_problem(0, good_frame()) is None


def test_an_integer_beyond_the_float_range_is_refused_not_raised() -> None:
    frame = good_frame()
    frame[4] = 10**401
    problem = frame_problem(2, frame)
    assert problem is not None and "frame 2, value 4: not a finite number" in problem and len(problem) < 80


def test_frames_without_a_hand_are_left_out_and_too_few_hands_refused() -> None:
    real = hands.generate_pose("rock", 25, np.random.default_rng(0), handedness=1.0).tolist()
    lost = [[0.0] * 63 + [1.0], [0.001] * 63 + [1.0]]  # tracking lost: zeros, or one point
    kept = check_frames(real[:20] + lost + real[20:], 20, 30)
    assert kept.shape == (25, 64) and np.array_equal(kept, np.asarray(real, np.float32))
    with pytest.raises(FrameError, match=r"only 19 of 21 frames show a hand, need 20"):
        check_frames(real[:19] + lost, 20, 30)


def test_frame_count_limits() -> None:
    with pytest.raises(FrameError, match="got 5 frames"):
        check_frames([good_frame()] * 5, 20, 30)
    with pytest.raises(FrameError, match="got 31 frames"):
        check_frames([good_frame()] * 31, 20, 30)


def coordinate_major(frames: np.ndarray) -> np.ndarray:
    """Frames as a client that sends x0 ... x20, y0 ... y20, z0 ... z20, handedness would."""
    out = np.array(frames, dtype=np.float32)
    out[:, :63] = out[:, :63].reshape(-1, 21, 3).transpose(0, 2, 1).reshape(-1, 63)
    return out


@pytest.mark.parametrize("pose", ["paper", "rock", "scissors", "thumbs_up", "point_left", "ok"])
def test_frames_sent_coordinate_major_are_refused_saying_so(pose: str) -> None:
    rng = np.random.default_rng(3)
    for handedness in (0.0, 1.0):
        recording = hands.generate_recording(pose, 20, rng, handedness=handedness)
        assert check_frames(recording.tolist(), 20, 30).shape == (20, 64)
        with pytest.raises(FrameError, match=r"coordinate-major .* send each frame landmark by landmark, x0, y0, z0"):
            check_frames(coordinate_major(recording).tolist(), 20, 30)
        flat = recording.copy()
        flat[:, 2:63:3] = 0.0  # 2-D keypoints fed as z = 0 (the imported bases)
        assert layout_problem(flat) is None and layout_problem(coordinate_major(flat)) is not None


def test_points_that_are_no_hand_either_way_are_refused_as_such() -> None:
    """Random numbers, or every landmark but the wrist on one point, used to train a gesture that
    took an output of the model; they are refused, saying the frames are no hand, while every
    pose of the generator passes with either hand, in 3-D and flattened to 2-D."""
    rng = np.random.default_rng(4)
    scattered = [[*rng.uniform(-0.1, 0.1, 63), 1.0] for _ in range(50)]
    collapsed = [[0.1, 0.0, 0.0] + [0.0] * 60 + [0.0]] * 30
    for junk in (scattered, collapsed):
        with pytest.raises(FrameError, match=r"do not look like a hand's landmarks: .* send MediaPipe's 21 hand"):
            check_frames(junk, 20, 60)
    for pose in POSES:
        for handedness, orientation in itertools.product((0.0, 1.0), ("canonical", "natural")):
            for _ in range(3):
                recording = hands.generate_recording(pose, 20, rng, handedness=handedness, orientation=orientation)
                flat = recording.copy()
                flat[:, 2:63:3] = 0.0
                assert layout_problem(recording) is None and layout_problem(flat) is None, (pose, orientation)
    # A tight fist (fingers curled 90 / 105 / 80 deg, thumb across) seen edge-on, flattened: the
    # hand the limit comes nearest to (0.93 at the worst of 20,000 orientations).
    angles = np.array(hand_poses.POSES["rock"].angles, float)
    for finger in range(4):
        angles[4 * finger : 4 * finger + 4] = (90, 0, 105, 80)
    angles[16:21], angles[hand_poses.CUP] = hand_poses.THUMB_ACROSS, 25
    q, r = np.linalg.qr(rng.normal(size=(20_000, 3, 3)))
    turns = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # uniform random orientations
    turns[np.linalg.det(turns) < 0, :, 0] *= -1
    fists = hands.hand_from_angles(np.tile(angles, (len(turns), 1)), rotation=turns)
    fists[:, 2:63:3] = 0.0
    ratios = _bone_ratio(landmarks(fists))
    assert ratios.max() > 0.9  # the edge-on views this case is about
    worst = fists[np.argsort(ratios)[-20:]]  # the 20 orientations that score highest
    assert layout_problem(worst) is None


def test_real_recordings_pass_the_layout_check_and_fail_it_regrouped(shared_data: Path) -> None:
    """Every 20 consecutive frames of every real recording (world and 2-D), as sent and as a
    coordinate-major client would send them."""
    from bench.datasets import load_all

    windows = 0
    for dataset in load_all(shared_data):
        for label, frames in dataset.frames.items():
            for start in range(0, len(frames) - 19, 5):
                window = frames[start : start + 20]
                assert layout_problem(window) is None, (dataset.name, label, start)
                assert layout_problem(coordinate_major(window)) is not None, (dataset.name, label, start)
                windows += 1
    assert windows > 1500


def test_a_flat_list_of_numbers_is_refused_as_such() -> None:
    flat = [value for _ in range(100) for value in good_frame()]
    with pytest.raises(FrameError, match=r"a flat list of 6400 numbers: send \[\[x0, y0, z0"):
        check_frames(flat, 20, 1000)


def test_app_quantization_is_one_millimetre_and_clamps() -> None:
    assert app_quantize([[0.0, 0.001, -0.128, 0.127, 1.0, -1.0]]).tolist() == [[128, 129, 0, 255, 255, 0]]
    view = app_view([[0.0123, 1.0]])
    assert view[0, 0] == pytest.approx(0.012, abs=1e-6) and view[0, 1] == pytest.approx(INPUT_MAX)
    assert INPUT_MIN == pytest.approx(-0.128) and INPUT_MAX == pytest.approx(0.127)


def test_normalize_is_translation_scale_and_mirror_invariant() -> None:
    rng = np.random.default_rng(3)
    right = hands.generate_pose("scissors", 20, rng, handedness=1.0)
    moved = right.copy()
    moved[:, :63] = (moved[:, :63].reshape(-1, 21, 3) * 1.3 + np.array([0.01, -0.02, 0.005])).reshape(-1, 63)
    np.testing.assert_allclose(normalize(moved), normalize(right), atol=1e-4)
    left = right.copy()
    left[:, 0:63:3] *= -1
    left[:, 63] = 0.0
    np.testing.assert_allclose(normalize(left), normalize(right), atol=1e-5)
    # app-clamped handedness (0.127) counts as right-handed too
    clamped = right.copy()
    clamped[:, 63] = 0.127
    np.testing.assert_allclose(normalize(clamped), normalize(right), atol=1e-6)
