"""Unknown-pose generation and augmentation: what changes a gesture and what does not."""

from __future__ import annotations

import numpy as np

from ghostouch.engine import hands, negatives
from ghostouch.engine.augment import AugmentConfig, augment, finger_curl, mirrored_points
from ghostouch.engine.frames import normalize
from tests.conftest import index_little_angle


def test_augmented_copies_keep_the_hand_shape_close() -> None:
    rng = np.random.default_rng(0)
    frames = hands.generate_recording("scissors", 50, rng)
    aug = augment(frames, 4, rng)
    assert aug.shape == (200, 64)
    assert np.array_equal(aug[:, 63], np.repeat(frames[:, 63], 4))
    # Same pose: shape distance far below the distance to another gesture.
    same = negatives.nearest_distance(negatives.shape(aug), negatives.shape(frames))
    other = negatives.nearest_distance(negatives.shape(hands.generate_pose("paper", 50, rng)), negatives.shape(frames))
    assert np.median(same) < 0.5 * np.median(other)


def test_augmentation_turns_stay_below_a_right_angle() -> None:
    rng = np.random.default_rng(1)
    frames = hands.generate_recording("point_left", 40, rng, handedness=1.0)
    cfg = AugmentConfig()
    aug = augment(frames, 5, rng, cfg)
    a, b = normalize(frames).reshape(-1, 21, 3), normalize(aug).reshape(-1, 21, 3)
    # Index direction (MCP to tip) of each augmented copy vs its source frame.
    src = np.repeat(a[:, 8] - a[:, 5], 5, axis=0)
    dst = b[:, 8] - b[:, 5]
    cos = np.sum(src * dst, axis=1) / np.linalg.norm(src, axis=1) / np.linalg.norm(dst, axis=1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 120.0
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))) < 60.0


def test_optional_fan_and_knuckle_bend_vary_an_open_hand() -> None:
    rng = np.random.default_rng(5)
    paper = hands.generate_recording("paper", 40, rng)
    still = AugmentConfig(
        roll_deg=0, pitch_deg=0, yaw_deg=0, bend_deg=0, thumb_turn_deg=0, finger_length_jitter=0,
        depth_scale_jitter=0, noise_m=0,
    )  # fmt: skip
    plain = augment(paper, 5, np.random.default_rng(0), still)
    fanned = augment(paper, 5, np.random.default_rng(0), AugmentConfig(**{**still.__dict__, "abduction_deg": 20}))
    # Fanning moves index and little finger apart or together by up to 2.2 x 20 deg ...
    change = index_little_angle(fanned) - index_little_angle(plain)
    assert change.min() < -20 and change.max() > 20 and np.abs(change).max() < 45
    # ... and leaves the wrist, the palm and the thumb where they were.
    palm = [0, 1, 2, 3, 4, 5, 9, 13, 17]
    pts_plain, pts_fanned = mirrored_points(plain)[0], mirrored_points(fanned)[0]
    assert np.abs(pts_plain[:, palm] - pts_fanned[:, palm]).max() < 1e-6
    bent = augment(paper, 5, np.random.default_rng(0), AugmentConfig(**{**still.__dict__, "knuckle_deg": 40}))
    curl = np.stack([finger_curl(mirrored_points(bent)[0], f) - finger_curl(pts_plain, f) for f in range(1, 5)])
    assert np.abs(curl).max() > 25 and np.abs(curl).max() < 45
    assert np.abs(pts_plain[:, palm] - mirrored_points(bent)[0][:, palm]).max() < 1e-6


def test_finger_changes_move_a_digit_to_another_state() -> None:
    rng = np.random.default_rng(2)
    fist = hands.generate_recording("rock", 60, rng)
    changed = negatives.finger_changes(fist, 300, rng)
    pts, _ = mirrored_points(changed)
    curls = np.stack([finger_curl(pts, f) for f in range(1, 5)], axis=1)
    # A fist has every finger curled; most changed hands straighten or half-open at least one.
    assert np.mean(curls.min(axis=1) < 90.0) > 0.5
    # Bone lengths are kept (the hand stays anatomically plausible).
    bone = np.linalg.norm(changed[:, 18:21] - changed[:, 15:18], axis=1)
    before = np.linalg.norm(fist[:, 18:21] - fist[:, 15:18], axis=1)
    assert np.isclose(np.median(bone), np.median(before), rtol=0.1)


def test_far_from_keeps_only_other_shapes() -> None:
    rng = np.random.default_rng(3)
    known = hands.generate_recording("one", 80, rng)
    same = known[:40].copy()  # the same hands, moved, scaled and seen mirrored
    same[:, :63] = same[:, :63] * 1.2 + 0.01
    same[:, 0:63:3] *= -1.0
    same[:, 63] = 1.0 - same[:, 63]
    candidates = np.concatenate([same, hands.generate_pose("paper", 40, rng)])
    kept = negatives.far_from(candidates, known, 2.5)
    assert len(kept) == 40 and np.array_equal(kept, candidates[40:])


def test_chimeras_mix_gestures() -> None:
    rng = np.random.default_rng(4)
    frames = np.concatenate([hands.generate_recording(n, 50, rng) for n in ("rock", "paper")])
    labels = np.repeat([0, 1], 50)
    mixed = negatives.finger_chimeras(frames, labels, 200, rng)
    assert len(mixed) > 50
    assert np.all(np.isfinite(mixed)) and mixed.shape[1] == 64
