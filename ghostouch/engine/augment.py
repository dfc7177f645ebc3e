"""3-D augmentation of recorded frames: what a user's later attempts at a pose look like.

A recording covers one angle, one distance and one hand; the augmented copies add rotations
within what a wrist does naturally, finger-length differences, depth uncertainty, small bends of
every finger joint and landmark noise (optionally, fingers fanned or closed and bent together
at the knuckles). Rotations stay well below 90°, so gestures that differ
only by orientation (thumbs up and thumbs down) remain different.

The finger geometry helpers (`palm_axes`, `bend`, `set_finger`) are also what `negatives.py`
uses to build hands that hold some finger in a clearly different state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ghostouch.engine import hand_poses
from ghostouch.engine.frames import FINGERS, HANDEDNESS, landmarks

Points = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AugmentConfig:
    # Real users turn their hand far more than a single recording shows (on the benchmark's
    # recordings, later frames of a gesture are often 60-90 deg away in the image plane); 75 deg
    # still leaves thumbs-up and thumbs-down (180 deg apart) clearly apart.
    roll_deg: float = 75.0  # rotation in the image plane
    pitch_deg: float = 40.0  # tilting towards / away from the camera
    yaw_deg: float = 40.0  # turning the palm left / right
    finger_length_jitter: float = 0.08  # relative, per finger
    depth_scale_jitter: float = 0.25  # MediaPipe's z is the least reliable axis
    # Making a pose again, people bend each joint differently by about 8 deg (SD); a recording
    # drifts far less. Uniform +-15 deg has that SD; finger *changes* in negatives.py are 40+.
    bend_deg: float = 15.0  # per finger joint, flexion (+) or extension (-)
    thumb_turn_deg: float = 20.0  # the thumb's chain turned about its base
    # Fingers fanned out (+) or closed together (-) by up to this much at the index (the little
    # finger moves 1.2 times as far, the other way), and bent together at the knuckles. Off: on
    # the 2-D benchmark they helped kinivi a little, but a knuckle bend of 40 deg let Libras' flat
    # B pass for its curved C (bench/RESULTS.md, "Fanned and bent fingers").
    abduction_deg: float = 0.0
    knuckle_deg: float = 0.0
    noise_m: float = 0.002


def is_flat(frames: npt.NDArray[np.float32]) -> bool:
    """Frames of 2-D keypoints (every z exactly 0), as some clients send."""
    return not np.any(np.asarray(frames)[:, 2:HANDEDNESS:3])


def flatten_depth(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`frames` with z = 0: augmented copies of 2-D keypoints seen as such a client sees them."""
    out = np.array(frames, dtype=np.float32, copy=True)
    out[:, 2:HANDEDNESS:3] = 0.0
    return out


def rotation_matrices(rng: np.random.Generator, n: int, cfg: AugmentConfig) -> npt.NDArray[np.float64]:
    roll = np.radians(rng.uniform(-cfg.roll_deg, cfg.roll_deg, n))
    pitch = np.radians(rng.uniform(-cfg.pitch_deg, cfg.pitch_deg, n))
    yaw = np.radians(rng.uniform(-cfg.yaw_deg, cfg.yaw_deg, n))
    c, s = np.cos, np.sin
    rz = np.zeros((n, 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1] = c(roll), -s(roll), s(roll), c(roll)
    rz[:, 2, 2] = 1
    rx = np.zeros((n, 3, 3))
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2] = 1, c(pitch), -s(pitch)
    rx[:, 2, 1], rx[:, 2, 2] = s(pitch), c(pitch)
    ry = np.zeros((n, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = c(yaw), s(yaw), 1, -s(yaw), c(yaw)
    return np.asarray(rz @ rx @ ry)


def _unit(v: Points) -> Points:
    return np.asarray(v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9))


def mirrored_points(frames: npt.NDArray[np.float32]) -> tuple[Points, npt.NDArray[np.float64]]:
    """[n, 21, 3] landmarks with left hands mirrored onto right hands, and the x sign used."""
    pts = landmarks(frames).astype(np.float64)
    sign = np.where(np.asarray(frames)[:, HANDEDNESS] >= 0.5, 1.0, -1.0)
    pts[:, :, 0] *= sign[:, None]
    return pts, sign


def to_frames(pts: Points, sign: npt.NDArray[np.float64], like: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Inverse of `mirrored_points`: back to [n, 64] frames with `like`'s handedness."""
    out = np.array(like, dtype=np.float32, copy=True)
    pts = pts.copy()
    pts[:, :, 0] *= sign[:, None]
    out[:, :HANDEDNESS] = pts.reshape(len(pts), HANDEDNESS)
    return out


def palm_axes(pts: Points) -> tuple[Points, Points, Points]:
    """Per frame of right-hand landmarks: distal (wrist to middle MCP), lateral (little to index
    MCP, towards the thumb) and palmar unit axes, each [n, 3]."""
    distal = _unit(pts[:, 9] - pts[:, 0])
    lateral = pts[:, 5] - pts[:, 17]
    lateral = _unit(lateral - np.sum(lateral * distal, axis=1, keepdims=True) * distal)
    return distal, lateral, np.cross(lateral, distal)


def rotation_about(axis: Points, angle: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """[n, 3, 3] rotation matrices about unit axes [n, 3] by angles [n] (radians, Rodrigues)."""
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    c, s = np.cos(angle), np.sin(angle)
    t = 1.0 - c
    return np.stack(
        [
            np.stack([c + x * x * t, x * y * t - z * s, x * z * t + y * s], axis=-1),
            np.stack([y * x * t + z * s, c + y * y * t, y * z * t - x * s], axis=-1),
            np.stack([z * x * t - y * s, z * y * t + x * s, c + z * z * t], axis=-1),
        ],
        axis=1,
    )


def rotate_about(v: Points, axis: Points, angle: npt.NDArray[np.float64]) -> Points:
    """Rotation of vectors v [n, k, 3] about unit axes [n, 3] by angles [n] (radians)."""
    return np.asarray(np.matmul(v, np.transpose(rotation_about(axis, angle), (0, 2, 1))))


def bend(pts: Points, joint: int, distal: tuple[int, ...], axis: Points, angle: npt.NDArray[np.float64]) -> None:
    """Turn landmarks `distal` about landmark `joint`, in place."""
    centre = pts[:, joint : joint + 1]
    pts[:, list(distal)] = centre + rotate_about(pts[:, list(distal)] - centre, axis, angle)


def finger_curl(pts: Points, finger: int) -> npt.NDArray[np.float64]:
    """Degrees between a finger's metacarpal direction and its MCP-to-tip direction."""
    root, tip = FINGERS[finger][0], FINGERS[finger][3]
    a = _unit(pts[:, root] - pts[:, 0])
    b = _unit(pts[:, tip] - pts[:, root])
    return np.asarray(np.degrees(np.arccos(np.clip(np.sum(a * b, axis=1), -1.0, 1.0))))


def set_finger(pts: Points, finger: int, angles: npt.NDArray[np.float64]) -> None:
    """Rebuild finger 1-4 (index..little) with flexion angles [n, 3] (MCP, PIP, DIP; degrees),
    keeping its bone lengths and the plane of its metacarpal. In place."""
    root = FINGERS[finger][0]
    _, lateral, _ = palm_axes(pts)
    axis0 = _unit(pts[:, root] - pts[:, 0])
    side = _unit(lateral - np.sum(lateral * axis0, axis=1, keepdims=True) * axis0)
    palmar = np.cross(side, axis0)
    cumulative = np.radians(np.cumsum(angles, axis=1))
    position = pts[:, root]
    for k in range(3):
        length = np.linalg.norm(pts[:, root + k + 1] - pts[:, root + k], axis=1, keepdims=True)
        c, s = np.cos(cumulative[:, k : k + 1]), np.sin(cumulative[:, k : k + 1])
        position = position + length * (c * axis0 + s * palmar)
        pts[:, root + k + 1] = position


def _rodrigues(v: Points, k: Points, angle: Points) -> Points:
    """Vectors v [..., 3] turned about unit axes k (broadcast to v) by angles [...] (radians)."""
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
    cross = np.stack(
        [
            k[..., 1] * v[..., 2] - k[..., 2] * v[..., 1],
            k[..., 2] * v[..., 0] - k[..., 0] * v[..., 2],
            k[..., 0] * v[..., 1] - k[..., 1] * v[..., 0],
        ],
        axis=-1,
    )
    return np.asarray(v * c + cross * s + k * np.sum(k * v, axis=-1, keepdims=True) * (1.0 - c))


# The fan pattern turned into this module's sign (a turn about the palm normal, + towards the
# little finger).
_FAN = -np.array([hand_poses.FAN])
_CHAINS = np.array(FINGERS)  # [5, 4] landmarks: base joint, then the three distal ones


def augment(
    frames: npt.NDArray[np.float32], copies: int, rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> npt.NDArray[np.float32]:
    """`copies` randomly varied versions of every frame ([n * copies, 64]), handedness kept."""
    cfg = cfg or AugmentConfig()
    base = np.repeat(np.asarray(frames, dtype=np.float32), copies, axis=0)
    n = len(base)
    pts, sign = mirrored_points(base)
    _, lateral, _ = palm_axes(pts)
    # Every digit as three bones from its base joint. Fingers bend at each joint about the palm's
    # lateral axis (cumulative angles along the chain); the thumb's chain turns as a whole about
    # a random axis. Each digit's length varies a little.
    chain = pts[:, _CHAINS]
    bones = chain[:, :, 1:] - chain[:, :, :-1]
    angles = np.radians(rng.uniform(-cfg.bend_deg, cfg.bend_deg, (n, 5, 3)))
    angles[:, 0, :] = np.radians(rng.uniform(-cfg.thumb_turn_deg, cfg.thumb_turn_deg, (n, 1)))
    if cfg.knuckle_deg:
        angles[:, 1:, 0] += np.radians(rng.uniform(-cfg.knuckle_deg, cfg.knuckle_deg, (n, 1)))
    angles[:, 1:] = np.cumsum(angles[:, 1:], axis=2)
    axes = np.repeat(lateral[:, None, None, :], 5, axis=1)
    axes[:, 0, 0, :] = _unit(rng.normal(size=(n, 3)))
    bones = _rodrigues(bones, axes, angles)
    if cfg.abduction_deg:
        # Turn about the palm's normal: + moves a finger towards the little finger.
        _, _, palmar = palm_axes(pts)
        fan = np.radians(rng.uniform(-cfg.abduction_deg, cfg.abduction_deg, (n, 1))) * _FAN
        bones[:, 1:] = _rodrigues(bones[:, 1:], palmar[:, None, None, :], np.repeat(fan[:, :, None], 3, axis=2))
    jitter = cfg.finger_length_jitter
    bones *= 1.0 + rng.uniform(-jitter, jitter, (n, 5, 1, 1))
    pts[:, _CHAINS[:, 1:]] = chain[:, :, :1] + np.cumsum(bones, axis=2)
    centre = pts.mean(axis=1, keepdims=True)
    pts = pts - centre
    pts[:, :, 2] *= 1.0 + rng.uniform(-cfg.depth_scale_jitter, cfg.depth_scale_jitter, (n, 1))
    pts = np.matmul(pts, np.transpose(rotation_matrices(rng, n, cfg), (0, 2, 1))) + centre
    pts += rng.normal(0.0, cfg.noise_m, pts.shape)
    return to_frames(pts, sign, base)
