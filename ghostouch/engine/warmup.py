"""Load TensorFlow and trace the training and export paths once, so the first job is fast."""

from __future__ import annotations

import numpy as np

from ghostouch.engine.trainer import EngineConfig, GestureFrames, train_gesture_model


def warm_up() -> None:
    rng = np.random.default_rng(0)
    gestures = []
    for i in range(2):
        frames = rng.normal(0.0, 0.03, (40, 64)).astype(np.float32)
        frames[:, :63] += i * 0.02
        frames[:, 63] = 1.0
        gestures.append(GestureFrames(f"g{i}", frames))
    cfg = EngineConfig(samples_per_gesture=50, negatives_per_gesture=0.0)
    train_gesture_model(gestures, cfg)
