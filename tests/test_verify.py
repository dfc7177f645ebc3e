"""The checks every exported model passes before it is published, shown able to fail."""

from __future__ import annotations

import numpy as np
import pytest

from ghostouch.engine import features, hands
from ghostouch.engine.export import _set_quantization, export_float, export_uint8
from ghostouch.engine.frames import INPUT_SCALE, INPUT_ZERO_POINT, OUTPUT_SCALE, app_view
from ghostouch.engine.model import TrainConfig, Weights, init_weights, predict_proba
from ghostouch.engine.trainer import MIN_AGREEMENT, MIN_FLOAT_AGREEMENT
from ghostouch.engine.verify import LiteModel, ModelCheckFailed, agreement, check_float_contract, check_legacy_contract


@pytest.fixture(scope="module")
def weights() -> Weights:
    # Random weights, scaled up so that the four outputs disagree confidently frame to frame.
    return [w * 4 for w in init_weights(features.n_features(), 4, TrainConfig(hidden=(16,), seed=2))]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.concatenate([hands.generate_pose(n, 40, rng) for n in ("paper", "rock", "ok", "thumbs_up")])


def test_the_legacy_contract_checks_layout_and_quantization(weights: Weights) -> None:
    content = export_uint8(weights)
    check_legacy_contract(LiteModel.load(content), 4)
    with pytest.raises(ModelCheckFailed, match=r"uint8\[1, 5\]"):
        check_legacy_contract(LiteModel.load(content), 5)
    # The converter's own choice for landmarks and handedness in one tensor (4.3 mm steps).
    coarse = _set_quantization(content, (0.0043, INPUT_ZERO_POINT), (OUTPUT_SCALE, 0))
    with pytest.raises(ModelCheckFailed, match="input quantization"):
        check_legacy_contract(LiteModel.load(coarse), 4)
    shifted = _set_quantization(content, (INPUT_SCALE, INPUT_ZERO_POINT), (1.0 / 255.0, 0))
    with pytest.raises(ModelCheckFailed, match="output quantization"):
        check_legacy_contract(LiteModel.load(shifted), 4)
    with pytest.raises(ModelCheckFailed, match=r"float variant: input is uint8"):
        check_float_contract(LiteModel.load(content), 4)


def test_the_float_variant_has_its_own_layout(weights: Weights) -> None:
    model = LiteModel.load(export_float(weights))
    check_float_contract(model, 4)
    with pytest.raises(ModelCheckFailed, match=r"input is float32"):
        check_legacy_contract(model, 4)


def test_agreement_rejects_an_export_that_decides_otherwise(weights: Weights, frames: np.ndarray) -> None:
    """An export whose outputs are in another order (a label-order bug) fails the agreement
    check that `train_gesture_model` applies to both exports; the faithful export passes it."""
    reference = predict_proba(weights, app_view(frames))
    assert agreement(LiteModel.load(export_uint8(weights)), frames, reference) >= MIN_AGREEMENT
    assert agreement(LiteModel.load(export_float(weights)), frames, reference) >= MIN_AGREEMENT
    swapped = [w.copy() for w in weights]
    swapped[-2], swapped[-1] = swapped[-2][:, [1, 0, 2, 3]], swapped[-1][[1, 0, 2, 3]]
    decided = np.argmax(reference, axis=1)
    assert np.isin(decided, [0, 1]).mean() > 0.2  # the swap touches enough frames to matter
    assert agreement(LiteModel.load(export_uint8(swapped)), frames, reference) < MIN_AGREEMENT
    assert agreement(LiteModel.load(export_float(swapped)), frames, reference) < MIN_FLOAT_AGREEMENT


def test_a_child_that_would_move_a_parent_gesture_is_refused() -> None:
    """The apps append the name they sent at max + 1 and never re-download a label map: a child
    must keep every parent index and put the new gesture last (deletes excepted)."""
    from ghostouch.jobs.training import check_app_indices
    from ghostouch.registry.repo import GestureInfo, ModelInfo

    gestures = [GestureInfo(n, i, [], 0) for i, n in enumerate(("paper", "rock", "scissors"))]
    parent = ModelInfo("base_v1", None, "system", "base", "", gestures, {}, {}, {}, "")
    child = [*gestures, GestureInfo("call", 3, [], 0)]
    check_app_indices({"kind": "train"}, parent, child, ["paper", "rock", "scissors", "call"])
    swapped = [GestureInfo("rock", 0, [], 0), GestureInfo("paper", 1, [], 0), *child[2:]]
    with pytest.raises(ModelCheckFailed, match="'paper' moved from 0"):
        check_app_indices({"kind": "train"}, parent, swapped, ["rock", "paper", "scissors", "call"])
    with pytest.raises(ModelCheckFailed, match="output 4 is 'call', the label map says 3"):
        check_app_indices({"kind": "train"}, parent, child, ["paper", "rock", "scissors", "ok", "call"])
    remaining = [GestureInfo("paper", 0, [], 0), GestureInfo("scissors", 1, [], 0)]
    check_app_indices({"kind": "delete"}, parent, remaining, ["paper", "scissors"])


def test_both_exports_read_frames_beyond_the_apps_range_alike(weights: Weights, frames: np.ndarray) -> None:
    """The API takes coordinates up to 0.3 m; the legacy apps clamp them to the uint8 range and
    the model is trained on that view. The float variant clamps the same way inside its graph."""
    big = frames.copy()
    big[:, :63] *= 2.5  # a hand far larger than any real one: many coordinates beyond 0.128 m
    assert np.abs(big[:, :63]).max() > 0.2
    reference = predict_proba(weights, app_view(big))
    unclamped = predict_proba(weights, big)
    assert np.abs(unclamped - reference).max() > 0.1  # clamping changes the answers here
    float_model = LiteModel.load(export_float(weights))
    assert np.abs(float_model.predict_proba(big) - reference).max() < 0.05
    assert agreement(float_model, big, reference) >= MIN_FLOAT_AGREEMENT
    assert agreement(LiteModel.load(export_uint8(weights)), big, reference) >= MIN_AGREEMENT
