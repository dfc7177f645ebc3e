"""The engine end to end on synthetic hands: one recording per gesture in, uint8 model out."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from ghostouch.engine import hands
from ghostouch.engine.duplicates import (
    MAX_ORIENTATION_RATIO,
    MAX_SPREAD_RATIO,
    check_duplicate,
    orientation_ratio,
    spread_ratio,
)
from ghostouch.engine.trainer import (
    EngineConfig,
    GestureFrames,
    ParentModel,
    TrainedModel,
    _unknown_poses,
    build_training_set,
    train_gesture_model,
    trim_strays,
)
from ghostouch.engine.verify import LiteModel, decisions

BASE = ("paper", "rock", "scissors")


def recordings(names: tuple[str, ...], seed: int, handedness: float = 1.0) -> list[GestureFrames]:
    rng = np.random.default_rng(seed)
    return [GestureFrames(n, hands.generate_recording(n, 100, rng, handedness=handedness)) for n in names]


def decide(model: LiteModel, frames: np.ndarray) -> np.ndarray:
    return decisions(model.predict_proba(frames))


@pytest.fixture(scope="module")
def parent() -> TrainedModel:
    return train_gesture_model(recordings(BASE, 1))


@pytest.fixture(scope="module")
def child(parent: TrainedModel) -> TrainedModel:
    """Extends `parent` as the worker does."""
    from_parent = ParentModel(LiteModel.load(parent.tflite_uint8), list(BASE))
    return train_gesture_model(recordings((*BASE, "one"), 1), parent=from_parent)


def test_metrics_and_contract(child: TrainedModel) -> None:
    assert child.labels == [*BASE, "one"]
    # The legacy export computes in float32 between its uint8 boundaries: it shows what the trained
    # model shows on every check frame (the trainer would refuse it only below 99 %).
    assert child.metrics["uint8_agreement"] == 1.0
    assert child.metrics["input_quantization"] == {"scale": pytest.approx(0.001), "zero_point": 128}
    assert set(child.metrics["timings"]) == {"train_s", "export_s", "verify_s"}
    lite = LiteModel.load(child.tflite_uint8)
    assert lite.n_outputs == 4 and lite.input_dtype == np.uint8


def turned(frames: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """The same hands seen at other angles (about every axis) and distances."""
    a, b, c = np.radians(rng.uniform(-degrees, degrees, (3, len(frames))))
    rz = np.stack([np.cos(a), -np.sin(a), 0 * a, np.sin(a), np.cos(a), 0 * a, 0 * a, 0 * a, 1 + 0 * a], 1)
    rx = np.stack([1 + 0 * b, 0 * b, 0 * b, 0 * b, np.cos(b), -np.sin(b), 0 * b, np.sin(b), np.cos(b)], 1)
    ry = np.stack([np.cos(c), 0 * c, np.sin(c), 0 * c, 1 + 0 * c, 0 * c, -np.sin(c), 0 * c, np.cos(c)], 1)
    r = rz.reshape(-1, 3, 3) @ rx.reshape(-1, 3, 3) @ ry.reshape(-1, 3, 3)
    pts = frames[:, :63].reshape(-1, 21, 3)
    out = frames.copy()
    scale = rng.uniform(0.85, 1.15, (len(frames), 1, 1))  # size as estimated from other distances
    out[:, :63] = (np.einsum("nij,nkj->nki", r, pts) * scale).reshape(-1, 63)
    return out


def test_the_same_user_at_other_angles_and_distances(child: TrainedModel) -> None:
    """The issue's scenario: the recorded poses, made again turned by up to 40 deg."""
    lite = LiteModel.load(child.tflite_uint8)
    rng = np.random.default_rng(20)
    for i, g in enumerate(recordings((*BASE, "one"), 1)):
        assert np.mean(decide(lite, turned(g.frames, rng, 40.0)) == i) >= 0.9, g.name


def test_other_people_mostly_recognized(child: TrainedModel) -> None:
    """Other hands, sizes, angles and joint variations (both hands) than the single recording
    each gesture was trained from: a harsher test than real base models, trained on many."""
    lite = LiteModel.load(child.tflite_uint8)
    rng = np.random.default_rng(21)
    recalls = [np.mean(decide(lite, hands.generate_pose(name, 150, rng)) == i) for i, name in enumerate(child.labels)]
    assert np.mean(recalls) >= 0.85 and min(recalls) >= 0.7, recalls


def test_a_right_hand_recording_serves_the_left_hand(child: TrainedModel) -> None:
    """Trained on right hands only, the uint8 model must still mirror left hands correctly
    (its calibration covers the other hand)."""
    lite = LiteModel.load(child.tflite_uint8)
    frames = hands.generate_pose("one", 150, np.random.default_rng(22), handedness=0.0)
    assert np.mean(decide(lite, frames) == 3) >= 0.85


NEVER_TAUGHT = ("call", "rock_on", "ok", "four", "pinch", "thumbs_up")


def shown_as_gestures(model: TrainedModel, seed: int) -> dict[str, float]:
    """Share of each never-taught pose's frames (other people's hands) shown as some gesture."""
    lite = LiteModel.load(model.tflite_uint8)
    rng = np.random.default_rng(seed)
    return {name: float(np.mean(decide(lite, hands.generate_pose(name, 150, rng)) >= 0)) for name in NEVER_TAUGHT}


def test_poses_never_taught_mostly_show_no_gesture(child: TrainedModel) -> None:
    shown = shown_as_gestures(child, 23)
    assert max(shown.values()) <= 0.1, shown


def test_world_models_are_gated_unless_their_lineage_holds_many_hands(child: TrainedModel) -> None:
    """The familiarity gate (gate.py) is what keeps a pinch or a thumbs up, each a fist with
    a thumb moved, from passing for the taught rock; without it (a lineage that holds many
    people's hands, bases.MANY_HANDS_CONFIG) the same recordings let them through."""
    assert child.gate is not None and child.metrics["familiarity_gate"] is True
    ungated = train_gesture_model(recordings((*BASE, "one"), 1), EngineConfig(gate_3d=False))
    assert ungated.gate is None and ungated.metrics["familiarity_gate"] is False
    gated_shown, ungated_shown = shown_as_gestures(child, 23), shown_as_gestures(ungated, 23)
    assert ungated_shown["pinch"] >= 0.2 and ungated_shown["thumbs_up"] >= 0.2, ungated_shown
    assert gated_shown["pinch"] <= 0.1 and gated_shown["thumbs_up"] <= 0.1, gated_shown


def test_duplicate_check_with_the_parent_model(parent: TrainedModel) -> None:
    lite = LiteModel.load(parent.tflite_uint8)
    again = hands.generate_recording("rock", 100, np.random.default_rng(31), handedness=0.0)
    verdict = check_duplicate(lite, list(BASE), again)
    assert verdict.is_duplicate and verdict.gesture == "rock"
    for name in ("one", "call", "ok"):
        new = hands.generate_recording(name, 100, np.random.default_rng(32))
        assert not check_duplicate(lite, list(BASE), new).is_duplicate, name
    # Refining an existing gesture: it is not compared with itself.
    assert not check_duplicate(lite, list(BASE), again, ignore="rock").is_duplicate
    # With the parent's recorded frames, the hand shape must agree too.
    known = {g.name: g.frames for g in recordings(BASE, 1)}
    verdict = check_duplicate(lite, list(BASE), again, known=known)
    assert verdict.is_duplicate and verdict.spread_ratio is not None and verdict.spread_ratio <= MAX_SPREAD_RATIO
    elsewhere = {**known, "rock": hands.generate_recording("call", 100, np.random.default_rng(33))}
    verdict = check_duplicate(lite, list(BASE), again, known=elsewhere)
    assert verdict.gesture == "rock" and not verdict.is_duplicate


def test_spread_ratio_tells_re_recordings_from_other_shapes() -> None:
    rng = np.random.default_rng(1)
    names = ("paper", "rock", "scissors", "one", "ok", "call", "four", "three")
    first = {n: hands.generate_recording(n, 100, rng) for n in names}
    for name in BASE:
        again = hands.generate_recording(name, 100, np.random.default_rng(31), handedness=0.0)
        assert spread_ratio(again, first[name]) <= MAX_SPREAD_RATIO, name
        for other in names:
            if other != name:
                assert spread_ratio(first[other], first[name]) > 2.0, (name, other)


def test_orientation_ratio_tells_twins_from_re_recordings() -> None:
    """Same hand shape, held another way (thumbs up / down, pointing left / right): the palm's
    orientation tells them apart, and a re-recording by the same hand stays close."""
    for seed in range(3):
        rng = np.random.default_rng(40 + seed)
        hand = float(seed % 2)
        for first, second in (("thumbs_up", "thumbs_down"), ("point_left", "point_right")):
            a = hands.generate_recording(first, 100, rng, handedness=hand)
            again = hands.generate_recording(first, 100, rng, handedness=hand)
            twin = hands.generate_recording(second, 100, rng, handedness=hand)
            same, turned = orientation_ratio(again, a), orientation_ratio(twin, a)
            assert same is not None and same <= 0.5 * MAX_ORIENTATION_RATIO, (seed, first, same)
            assert turned is not None and turned >= 1.5 * MAX_ORIENTATION_RATIO, (seed, first, turned)
    flat = hands.generate_recording("rock", 100, np.random.default_rng(3))
    flat[:, 2:63:3] = 0.0
    assert orientation_ratio(flat, flat) is None  # 2-D keypoints: the palm's facing is ambiguous


def test_flat_keypoints_train_flat_samples() -> None:
    gestures = recordings(BASE, 2)
    flat_sets = []
    for g in gestures:
        frames = g.frames.copy()
        frames[:, 2:63:3] = 0.0
        flat_sets.append(frames)
    x, y, w = build_training_set(flat_sets, EngineConfig(), np.random.default_rng(0))
    assert not np.any(x[:, 2:63:3])
    assert len(x) == len(y) == len(w) and np.isclose(w.sum(), 3.0 + EngineConfig().negative_weight)


def test_a_child_leaves_out_unknown_poses_its_parent_shows_as_a_kept_gesture(parent: TrainedModel) -> None:
    recorded = recordings(BASE, 1)
    frames = np.concatenate([g.frames for g in recorded])
    from_parent = ParentModel(LiteModel.load(parent.tflite_uint8), list(BASE))
    assert from_parent.shows(frames, [*BASE, "one"]).mean() > 0.9  # its own gestures' frames
    assert not from_parent.shows(frames, ["one"]).any()  # a gesture the child drops is not kept
    assert from_parent.shows(hands.random_poses(200, np.random.default_rng(2)), list(BASE)).mean() < 0.2
    # Two outputs cannot say "no gesture" (one always has half): such a parent vouches for nothing.
    two = ParentModel(LiteModel.load(train_gesture_model(recorded[:2]).tflite_uint8), list(BASE[:2]))
    assert not two.shows(frames, list(BASE)).any()
    # A gesture being refined is not vouched for; nor is anything by a file whose outputs do not
    # match its labels.
    refining = ParentModel(from_parent.lite, list(BASE), not_kept=frozenset({"rock"}))
    rock = recorded[1].frames
    assert from_parent.shows(rock, list(BASE)).mean() > 0.9 and not refining.shows(rock, list(BASE)).any()
    assert not ParentModel(from_parent.lite, [*BASE, "one"]).shows(frames, [*BASE, "one"]).any()

    sets = [g.frames for g in recorded]

    def marked(f: np.ndarray) -> np.ndarray:  # about a quarter of any set of frames
        return np.asarray((np.abs(f[:, 3] * 1e6).astype(np.int64) % 4) == 0)

    unfiltered = _unknown_poses(sets, 900, EngineConfig(), np.random.default_rng(0), None)
    filtered = _unknown_poses(sets, 900, EngineConfig(), np.random.default_rng(0), marked)
    assert 0.1 < marked(unfiltered).mean() < 0.4 and len(filtered) > 450 and not marked(filtered).any()
    # A parent that vouches for (nearly) everything would leave no "no gesture" samples: ignored.
    everything = _unknown_poses(sets, 900, EngineConfig(), np.random.default_rng(0), lambda f: np.ones(len(f), bool))
    assert len(everything) == len(unfiltered)


def test_every_child_asks_its_parent_gated_or_not(parent: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Children of many-hands bases (no familiarity gate) keep their parent's answers too: the
    unknown poses the parent shows as a shared gesture are not trained as "no gesture"."""
    from ghostouch.bases import MANY_HANDS_CONFIG

    asked: list[int] = []
    original = ParentModel.shows

    def counting(self: ParentModel, frames: np.ndarray, labels: list[str]) -> np.ndarray:
        asked.append(len(frames))
        return original(self, frames, labels)

    monkeypatch.setattr(ParentModel, "shows", counting)
    from_parent = ParentModel(LiteModel.load(parent.tflite_uint8), list(BASE))
    child = train_gesture_model(recordings((*BASE, "one"), 1), MANY_HANDS_CONFIG, parent=from_parent)
    assert child.gate is None and asked and sum(asked) > 100
    asked.clear()
    train_gesture_model(
        recordings((*BASE, "one"), 1), replace(MANY_HANDS_CONFIG, keep_parent_answers=False), parent=from_parent
    )
    assert not asked


def test_trim_strays_drops_stray_frames_only() -> None:
    rng = np.random.default_rng(4)
    frames = np.concatenate([hands.generate_recording("rock", 95, rng), hands.generate_pose("paper", 5, rng)])
    kept = trim_strays(frames, 3.0)
    assert len(kept) >= 90
    assert not np.any(np.isin(kept[:, 0], frames[95:, 0]))
    # A second pose held for a while (a gesture made two ways) is not a stray.
    two_ways = np.concatenate([frames[:60], hands.generate_recording("paper", 40, rng)])
    assert len(trim_strays(two_ways, 3.0)) >= 95


def test_a_warm_job_is_fast() -> None:
    gestures = recordings((*BASE, "one"), 3)
    train_gesture_model(gestures)  # warm
    times = []
    for seed in range(3):
        t = time.perf_counter()
        train_gesture_model(gestures, EngineConfig(seed=seed))
        times.append(time.perf_counter() - t)
    # ~0.6 s on a quiet 2-core machine, 2.2 s with two other TensorFlow processes running; the
    # bound catches what costs seconds per job (retracing the training loop, rebuilding the
    # embedding), not noise: bench/RESULTS.md tracks the real figures.
    assert float(np.median(times)) < 5.0


def test_a_pose_trained_twice_under_two_names_still_passes_verification() -> None:
    """allow_duplicate=true: two gestures of one pose leave many frames near 0.5, where the
    output's 1/256 steps alone could change what the app shows; the check compares like with like."""
    rng = np.random.default_rng(41)
    again = [GestureFrames(f"{name} {i}", hands.generate_recording(name, 100, rng)) for i in range(3) for name in BASE]
    gestures = [*recordings(BASE, 41), *again]
    model = train_gesture_model(gestures)  # raises ModelCheckFailed when the check fails
    assert len(model.labels) == 12 and model.metrics["holdout_confusion"]["rows"] == model.labels


def test_a_gesture_without_frames_is_refused_by_name() -> None:
    frames = hands.generate_recording("rock", 40, np.random.default_rng(3))
    with pytest.raises(ValueError, match="without frames: paper"):
        train_gesture_model([GestureFrames("rock", frames), GestureFrames("paper", frames[:0])])
