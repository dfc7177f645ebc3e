"""3-D augmentation of recorded frames: what a user's later attempts at a pose look like.

A recording covers one angle, one distance and one hand; the augmented copies add rotations
within what a wrist does naturally, finger-length differences, depth uncertainty and landmark
noise. Rotations stay well below 90°, so gestures that differ only by orientation (thumbs up and
thumbs down) remain different.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ghostouch.engine.frames import HANDEDNESS, landmarks

FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


@dataclass(frozen=True)
class AugmentConfig:
    roll_deg: float = 25.0  # rotation in the image plane
    pitch_deg: float = 25.0  # tilting towards / away from the camera
    yaw_deg: float = 30.0  # turning the palm left / right
    finger_length_jitter: float = 0.08  # relative, per finger
    depth_scale_jitter: float = 0.25  # MediaPipe's z is the least reliable axis
    noise_m: float = 0.002


def rotation_matrices(rng: np.random.Generator, n: int, cfg: AugmentConfig) -> npt.NDArray[np.float64]:
    roll = np.radians(rng.uniform(-cfg.roll_deg, cfg.roll_deg, n))
    pitch = np.radians(rng.uniform(-cfg.pitch_deg, cfg.pitch_deg, n))
    yaw = np.radians(rng.uniform(-cfg.yaw_deg, cfg.yaw_deg, n))
    c, s = np.cos, np.sin
    rz = np.zeros((n, 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c(roll), -s(roll), s(roll), c(roll), 1
    rx = np.zeros((n, 3, 3))
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = 1, c(pitch), -s(pitch), s(pitch), c(pitch)
    ry = np.zeros((n, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = c(yaw), s(yaw), 1, -s(yaw), c(yaw)
    return np.asarray(rz @ rx @ ry)


def augment(
    frames: npt.NDArray[np.float32], copies: int, rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> npt.NDArray[np.float32]:
    """`copies` randomly varied versions of every frame ([n * copies, 64]), handedness kept."""
    cfg = cfg or AugmentConfig()
    base = np.repeat(np.asarray(frames, dtype=np.float32), copies, axis=0)
    n = len(base)
    pts = landmarks(base).astype(np.float64)
    for finger in FINGERS:
        root = pts[:, finger[0] : finger[0] + 1, :]
        factor = 1.0 + rng.uniform(-cfg.finger_length_jitter, cfg.finger_length_jitter, (n, 1, 1))
        pts[:, finger[1:], :] = root + (pts[:, finger[1:], :] - root) * factor
    centre = pts.mean(axis=1, keepdims=True)
    pts = pts - centre
    pts[:, :, 2] *= 1.0 + rng.uniform(-cfg.depth_scale_jitter, cfg.depth_scale_jitter, (n, 1))
    pts = np.einsum("nij,nkj->nki", rotation_matrices(rng, n, cfg), pts) + centre
    pts += rng.normal(0.0, cfg.noise_m, pts.shape)
    out = base.copy()
    out[:, :HANDEDNESS] = pts.reshape(n, HANDEDNESS)
    return out
