"""Kinematic synthetic hands in the apps' frame format.

A frame is 64 float32 values: the 21 MediaPipe Hands *world* landmarks (x, y, z in metres,
landmark-major), then handedness (0.0 left, 1.0 right). World landmarks follow the image
convention: x to the image right, y *down*, z away from the camera (smaller z = closer), with the
origin near landmark 9 (middle finger MCP).

The hand model: a palm given by the positions of the wrist, thumb CMC and the four finger MCP
joints, chains of three bones per finger (proximal, middle, distal phalanx) and for the thumb
(metacarpal, proximal, distal phalanx), driven by the joint angles of `hand_poses`. Dimensions are
those of an average adult hand (wrist to middle MCP 9.5 cm, middle finger 9.2 cm, phalanx ratios
from published radiographic measurements); each generated hand draws an overall size, per-bone
length jitter, and MediaPipe-like landmark noise.

Hands are built as right hands in a local frame where the hand is upright (fingers towards -y)
with the palm facing the camera (-z) and the thumb towards +x. A left hand is the mirror image
(x negated) of a right hand; poses defined by an image direction name a mirror partner so that,
for example, `point_left` points to the image left for both hands.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from ghostouch.engine.hand_poses import (
    ANGLE_SD,
    CUP,
    FINGER_ANGLES,
    N_ANGLES,
    POSES,
    THUMB,
    Pose,
    clip_angles,
    random_angles,
)

Frames = npt.NDArray[np.float32]
Array = npt.NDArray[np.float64]
Orientation = Literal["canonical", "natural"]

POSE_NAMES: tuple[str, ...] = tuple(POSES)

# Palm of a right hand (metres, wrist at the origin): landmarks 1 (thumb CMC), 5, 9, 13, 17
# (MCP joints). Their distances from the wrist follow the metacarpal lengths (II 68 mm, the
# longest, III 64, IV 58, V 53 mm on carpal bases of different heights). The MCP row arches:
# index and middle are the most dorsal, ring and little sit slightly towards the palm; the joint
# centres span about 6 cm (hand breadth minus soft tissue).
_PALM = np.array(
    [
        [0.024, -0.030, -0.010],
        [0.025, -0.093, -0.002],
        [0.004, -0.095, 0.000],
        [-0.015, -0.088, -0.002],
        [-0.032, -0.076, -0.005],
    ]
)
# Bone lengths between landmark joint centres (metres): thumb metacarpal/proximal/distal, then
# proximal/middle/distal phalanx of index, middle, ring, little. The distal segment runs to the
# fingertip and so includes the pulp beyond the bone.
_BONES = np.array(
    [
        [0.044, 0.032, 0.027],
        [0.040, 0.023, 0.019],
        [0.045, 0.027, 0.020],
        [0.042, 0.026, 0.020],
        [0.033, 0.019, 0.018],
    ]
)
# Resting divergence of the extended fingers from the hand axis, degrees (radial positive).
_SPLAY = (4.0, 0.0, -4.0, -9.0)
# Resting axial rotation of the thumb: its pad faces across the palm (towards the little finger).
_THUMB_BASE_PRONATION = -70.0
# Fraction of the palm cupping applied to the ring and little metacarpals.
_CUP_SHARE = (0.0, 0.0, 0.5, 1.0)

SIZE_SD = 0.07  # hand size, relative (adult palm length varies by about 6-8 %)
BONE_SD = 0.04  # per-bone length jitter, relative
PALM_SD = 0.03  # per-palm-landmark jitter, relative
NOISE_SD = (0.0025, 0.0025, 0.0035)  # MediaPipe world-landmark noise per axis, metres
CENTRE_SD = 0.002  # offset of MediaPipe's hand centre from landmark 9, metres
ORIENTATION_RANGE = 20.0  # +- degrees around each axis at variation=1
ORIENTATION_SD = 0.35  # standard deviation of those turns, relative to the range
CONTACT_GAP = 0.009  # thumb tip to index tip when touching (pads have thickness), metres


def _rot_x(a: Array) -> Array:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a: Array) -> Array:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a: Array) -> Array:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def euler_rotation(in_plane: Array, tilt: Array, twist: Array) -> Array:
    """Rotations (n, 3, 3) from angles in degrees, applied to an upright hand in this order:
    `twist` about the hand's long axis (image y), `tilt` of the fingers towards the camera
    (about image x), `in_plane` rotation in the image (0 up, 90 fingers to the image right)."""
    return _rot_z(np.radians(in_plane)) @ _rot_x(np.radians(tilt)) @ _rot_y(np.radians(twist))


def _chain(
    start: Array, frame: Array, lengths: Array, flexions: tuple[Array, Array, Array]
) -> tuple[list[Array], Array]:
    """Walk three bones from `start` (n, 3). `frame` (n, 3, 3) holds the columns lateral, distal,
    palmar; each joint flexes the distal axis towards the palmar one by its angle (radians)."""
    points: list[Array] = []
    position = start
    for bone, flexion in enumerate(flexions):
        frame = frame @ _rot_x(flexion)
        position = position + lengths[:, bone, None] * frame[:, :, 1]
        points.append(position)
    return points, frame


def _touch(landmarks: Array, size: Array) -> None:
    """Close the gap between thumb tip (4) and index tip (8) to CONTACT_GAP, in place: both
    chains bend a little towards each other (the thumb does most of the work)."""
    gap = landmarks[:, 8] - landmarks[:, 4]
    distance = np.linalg.norm(gap, axis=1, keepdims=True)
    target = CONTACT_GAP * size[:, None]
    correction = gap * (1.0 - target / np.maximum(distance, 1e-9))
    for landmark, weight in zip((2, 3, 4), (0.15, 0.55, 1.0), strict=True):
        landmarks[:, landmark] += 0.65 * weight * correction
    for landmark, weight in zip((6, 7, 8), (0.2, 0.6, 1.0), strict=True):
        landmarks[:, landmark] -= 0.35 * weight * correction


def hand_from_angles(
    angles: npt.ArrayLike,
    *,
    size: npt.ArrayLike = 1.0,
    bone_scale: npt.ArrayLike | None = None,
    palm_scale: npt.ArrayLike | None = None,
    rotation: npt.ArrayLike | None = None,
    handedness: npt.ArrayLike = 1.0,
    contact: bool = False,
) -> Frames:
    """Noise-free frames (n, 64) of hands with the given joint angles.

    angles: (n, N_ANGLES) or (N_ANGLES,) degrees, layout of `hand_poses`.
    size: overall scale (1.0 = wrist to middle MCP 9.5 cm), scalar or (n,).
    bone_scale: relative length of each bone, (n, 5, 3) (thumb, index, middle, ring, little).
    palm_scale: relative distance of landmarks 1, 5, 9, 13, 17 from the wrist, (n, 5).
    rotation: (3, 3) or (n, 3, 3) applied to the upright, palm-to-camera right hand.
    handedness: 1.0 right, 0.0 left (the mirror image, x negated, of the right hand computed
        with the same arguments); scalar or (n,).
    contact: bring the thumb tip and index tip together (ok, pinch).
    Landmark 9 is placed exactly at the origin.
    """
    a = np.radians(np.atleast_2d(np.asarray(angles, dtype=np.float64)))
    if a.shape[1] != N_ANGLES:
        raise ValueError(f"angles must have {N_ANGLES} columns, got shape {a.shape}")
    n = a.shape[0]
    scale = np.broadcast_to(np.asarray(size, dtype=np.float64), (n,))
    bones = _BONES * scale[:, None, None]
    if bone_scale is not None:
        bones = bones * np.broadcast_to(np.asarray(bone_scale, dtype=np.float64), (n, 5, 3))
    palm = _PALM * scale[:, None, None]
    if palm_scale is not None:
        palm = palm * np.broadcast_to(np.asarray(palm_scale, dtype=np.float64), (n, 5))[..., None]

    landmarks = np.zeros((n, 21, 3))
    # Columns lateral (+x, thumb side), distal (-y, fingers up), palmar (-z, towards the camera).
    base = np.broadcast_to(np.diag([1.0, -1.0, -1.0]), (n, 3, 3))
    cup = a[:, CUP]
    for finger in range(4):
        first = 5 + 4 * finger
        share = _CUP_SHARE[finger]
        cupping = _rot_y(-share * cup)  # ring/little metacarpals fold towards the palm (-z)
        landmarks[:, first] = (cupping @ palm[:, 1 + finger, :, None])[..., 0]
        j = FINGER_ANGLES * finger
        splay = np.radians(_SPLAY[finger]) + a[:, j + 1]
        frame = cupping @ base @ _rot_z(-splay)
        points, _ = _chain(landmarks[:, first], frame, bones[:, 1 + finger], (a[:, j], a[:, j + 2], a[:, j + 3]))
        for k, point in enumerate(points):
            landmarks[:, first + 1 + k] = point

    landmarks[:, 1] = palm[:, 0]
    spread, lift, pronation, mcp, ip = (a[:, THUMB + k] for k in range(5))
    thumb_frame = base @ _rot_z(-spread) @ _rot_x(lift) @ _rot_y(np.radians(_THUMB_BASE_PRONATION) - pronation)
    points, _ = _chain(landmarks[:, 1], thumb_frame, bones[:, 0], (np.zeros(n), mcp, ip))
    for k, point in enumerate(points):
        landmarks[:, 2 + k] = point
    if contact:
        _touch(landmarks, scale)

    if rotation is not None:
        r = np.broadcast_to(np.asarray(rotation, dtype=np.float64), (n, 3, 3))
        landmarks = landmarks @ np.swapaxes(r, 1, 2)
    landmarks -= landmarks[:, 9:10]
    hand = np.broadcast_to(np.asarray(handedness, dtype=np.float64), (n,))
    landmarks[..., 0] *= np.where(hand >= 0.5, 1.0, -1.0)[:, None]
    frames = np.empty((n, 64), dtype=np.float32)
    frames[:, :63] = landmarks.reshape(n, 63)
    frames[:, 63] = np.where(hand >= 0.5, 1.0, 0.0)
    return frames


def _pose(name: str) -> Pose:
    try:
        return POSES[name]
    except KeyError:
        raise ValueError(f"unknown pose {name!r}; valid poses: {', '.join(POSE_NAMES)}") from None


@cache
def canonical_rotation(name: str) -> Array:
    """(3, 3) rotation of the right hand in pose `name` in its canonical orientation."""
    pose = _pose(name)
    in_plane, tilt, twist = pose.orientation
    if pose.aim is not None:
        start, end, target = pose.aim
        partial = euler_rotation(np.zeros(1), np.array([tilt]), np.array([twist]))
        frame = hand_from_angles(pose.angles, rotation=partial, contact=pose.contact)
        points = frame[0, :63].reshape(21, 3).astype(np.float64)
        vector = points[end] - points[start]
        in_plane = target - float(np.degrees(np.arctan2(vector[0], -vector[1])))
    rotation: Array = euler_rotation(np.array([in_plane]), np.array([tilt]), np.array([twist]))[0]
    rotation.setflags(write=False)
    return rotation


def natural_rotations(n: int, rng: np.random.Generator) -> Array:
    """(n, 3, 3) orientations a hand can naturally take in front of a phone camera: any turn in
    the image, any twist about the hand axis (palm, side or back to the camera), fingers tilted
    from 30 deg away from to 75 deg towards the camera."""
    return euler_rotation(rng.uniform(-180.0, 180.0, n), rng.uniform(-30.0, 75.0, n), rng.uniform(-180.0, 180.0, n))


class _Hands:
    """Random hand anatomy for n frames: handedness, size, bone and palm jitter."""

    def __init__(self, n: int, rng: np.random.Generator, handedness: float | None) -> None:
        coin = rng.random(n) < 0.5  # always drawn, so a fixed handedness keeps the same stream
        if handedness is None:
            self.right = coin
        elif handedness in (0.0, 1.0):
            self.right = np.full(n, handedness == 1.0)
        else:
            raise ValueError(f"handedness must be 0.0, 1.0 or None, got {handedness!r}")
        self.size = np.clip(rng.normal(1.0, SIZE_SD, n), 0.78, 1.22)
        self.bones = np.clip(rng.normal(1.0, BONE_SD, (n, 5, 3)), 0.88, 1.12)
        self.palm = np.clip(rng.normal(1.0, PALM_SD, (n, 5)), 0.91, 1.09)


def _noisy(frames: Frames, rng: np.random.Generator, centre: Array) -> Frames:
    """Add MediaPipe-like landmark noise and shift by the centre offset (n, 3), in place."""
    n = frames.shape[0]
    noise = rng.normal(0.0, 1.0, (n, 21, 3)) * np.array(NOISE_SD) - centre[:, None, :]
    frames[:, :63] += noise.reshape(n, 63).astype(np.float32)
    return frames


def _rotations(pose: Pose, hands: _Hands, n: int, rng: np.random.Generator, spread: float, orientation: str) -> Array:
    if orientation == "natural":
        return natural_rotations(n, rng)
    if orientation != "canonical":
        raise ValueError(f"orientation must be 'canonical' or 'natural', got {orientation!r}")
    # Truncated normal: most hands near the canonical orientation, none beyond +-spread.
    turns = np.clip(rng.normal(0.0, ORIENTATION_SD * spread, (3, n)), -spread, spread)
    delta = euler_rotation(turns[0], turns[1], turns[2])
    right = canonical_rotation(pose.name)
    left = canonical_rotation(pose.mirror)
    return delta @ np.where(hands.right[:, None, None], right, left)


def generate_pose(
    name: str,
    n: int,
    rng: np.random.Generator,
    *,
    handedness: float | None = None,
    variation: float = 1.0,
    orientation: Orientation = "canonical",
) -> Frames:
    """(n, 64) frames of the named pose, each from a different random hand.

    Each frame draws a hand (size, bone lengths), joint angles around the pose's nominal ones
    (standard deviations of `hand_poses.ANGLE_SD` times `variation`, clipped to the range of
    motion), an orientation around the pose's canonical one (turns about each image axis from a
    normal distribution of sd 7 deg truncated at +-20 deg, both times `variation`), and landmark
    noise. `handedness` None draws left/right per frame.
    `orientation="natural"` instead draws any natural orientation (`natural_rotations`).
    With the same rng state, a left hand is exactly the mirror image of the right hand of the
    pose's mirror partner (itself, except point_left <-> point_right).
    """
    pose = _pose(name)
    hands = _Hands(n, rng, handedness)
    sd = np.array(ANGLE_SD) * variation
    angles = clip_angles(np.array(pose.angles) + rng.normal(0.0, 1.0, (n, N_ANGLES)) * sd)
    rotation = _rotations(pose, hands, n, rng, ORIENTATION_RANGE * variation, orientation)
    frames = hand_from_angles(
        angles,
        size=hands.size,
        bone_scale=hands.bones,
        palm_scale=hands.palm,
        rotation=rotation,
        contact=pose.contact,
    )
    frames = _noisy(frames, rng, rng.normal(0.0, CENTRE_SD, (n, 3)))
    return _mirror_left(frames, hands.right)


def _mirror_left(frames: Frames, right: npt.NDArray[np.bool_]) -> Frames:
    frames[~right, 0:63:3] *= -1.0
    frames[:, 63] = right.astype(np.float32)
    return frames


def _smooth(rng: np.random.Generator, n: int, dims: int, frames_scale: float) -> Array:
    """(n, dims) smooth random drift with unit standard deviation: white noise low-pass filtered
    by a Gaussian of `frames_scale` frames (a ~3 s phone recording at 30 fps drifts slowly)."""
    width = int(3 * frames_scale)
    kernel = np.exp(-0.5 * (np.arange(-width, width + 1) / frames_scale) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))
    white = rng.normal(0.0, 1.0, (n + 2 * width, dims))
    out = np.empty((n, dims))
    for d in range(dims):
        out[:, d] = np.convolve(white[:, d], kernel, mode="valid")[:n]
    return out


def generate_recording(
    name: str,
    n: int,
    rng: np.random.Generator,
    *,
    handedness: float | None = None,
    orientation: Orientation = "canonical",
) -> Frames:
    """(n, 64) consecutive frames of one phone recording of the named pose.

    One hand (size, bones, handedness), one base pose and orientation drawn like
    `generate_pose`; the joint angles, orientation, size estimate and centre then drift slowly
    and smoothly from frame to frame, plus independent landmark noise per frame.
    """
    pose = _pose(name)
    hand = _Hands(1, rng, handedness)
    base_angles = np.array(pose.angles) + rng.normal(0.0, 1.0, N_ANGLES) * np.array(ANGLE_SD)
    base_rotation = _rotations(pose, hand, 1, rng, ORIENTATION_RANGE, orientation)
    # Drift columns: joint angles, 3 orientation turns, size estimate, 3 centre coordinates.
    drift = _smooth(rng, n, N_ANGLES + 7, frames_scale=10.0)
    angles = clip_angles(base_angles + 0.35 * drift[:, :N_ANGLES] * np.array(ANGLE_SD))
    turn = 4.0 * drift[:, N_ANGLES : N_ANGLES + 3]
    rotation = euler_rotation(turn[:, 0], turn[:, 1], turn[:, 2]) @ base_rotation
    size = hand.size[0] * (1.0 + 0.015 * drift[:, N_ANGLES + 3])
    frames = hand_from_angles(
        angles,
        size=size,
        bone_scale=hand.bones,
        palm_scale=hand.palm,
        rotation=rotation,
        contact=pose.contact,
    )
    centre = rng.normal(0.0, CENTRE_SD, 3) + 0.0015 * drift[:, N_ANGLES + 4 :]
    frames = _noisy(frames, rng, centre)
    return _mirror_left(frames, np.repeat(hand.right, n))


def random_poses(n: int, rng: np.random.Generator) -> Frames:
    """(n, 64) random hands: random joint angles within the human range of motion, random
    natural orientations, random handedness, size, bones and landmark noise."""
    hands = _Hands(n, rng, None)
    angles = random_angles(n, rng)
    frames = hand_from_angles(
        angles,
        size=hands.size,
        bone_scale=hands.bones,
        palm_scale=hands.palm,
        rotation=natural_rotations(n, rng),
    )
    frames = _noisy(frames, rng, rng.normal(0.0, CENTRE_SD, (n, 3)))
    return _mirror_left(frames, hands.right)
