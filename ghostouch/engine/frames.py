"""Frames as the apps send them: validation, the apps' uint8 quantization, and normalization.

A frame is 64 floats: 21 MediaPipe world landmarks (x, y, z in metres, landmark-major), then
handedness (0.0 left, 1.0 right). Everything here is plain NumPy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ghostouch.text import quoted

N_LANDMARKS = 21
FRAME_SIZE = 64
HANDEDNESS = 63
Frames = npt.NDArray[np.float32]

# A hand spans less than 0.3 m, and world landmarks are centred on the hand, so no coordinate
# of a real frame is farther than this from the origin.
MAX_ABS_COORDINATE = 0.3

# The uint8 input quantization of every exported legacy model: 1 mm per step over
# [-0.128, +0.127] m. The apps clamp to this range, so handedness 1.0 arrives as 0.127.
INPUT_SCALE = 0.001
INPUT_ZERO_POINT = 128
INPUT_MIN = (0 - INPUT_ZERO_POINT) * INPUT_SCALE
INPUT_MAX = (255 - INPUT_ZERO_POINT) * INPUT_SCALE
# The apps dequantize the softmax output with this scale (zero point 0), as converted models have it.
OUTPUT_SCALE = 1.0 / 256.0

# The smallest span (m) of a frame's landmarks along its widest axis: a fist is about 0.08 m.
MIN_HAND_EXTENT = 0.02

# Floor of the mean squared centred coordinate (m^2) before normalization: (3 mm)^2.
MIN_MEAN_SQUARE = 1e-5


# MediaPipe's landmark numbers: the wrist is 0, each finger (thumb first) four landmarks from its
# base joint to its tip.
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
# The hand's 21 bones: along each finger, the wrist to the thumb, index and little bases, and the
# palm's edge across the knuckles.
HAND_EDGES = (
    *((a, b) for finger in FINGERS for a, b in itertools.pairwise(finger)),
    (0, 1), (0, 5), (0, 17), (5, 9), (9, 13), (13, 17),
)  # fmt: skip
_PAIRS = np.triu_indices(N_LANDMARKS, 1)
LAYOUT_CHECK_FRAMES = 2000  # frames `layout_problem` looks at, at most
NOT_A_HAND_RATIO = 0.95  # `layout_problem`: a median bone-to-distance ratio over this is no hand


class FrameError(ValueError):
    """A frame the server cannot use; the message names the frame index and the problem."""


def frame_problem(index: int, frame: object) -> str | None:
    """Why frame `index` is unusable, or None when it is a valid 64-value frame."""
    if not isinstance(frame, Sequence) or isinstance(frame, str | bytes):
        return f"frame {index}: expected a list of 64 numbers, got {type(frame).__name__}"
    if len(frame) != FRAME_SIZE:
        return f"frame {index}: expected 64 numbers (21 landmarks x 3 + handedness), got {len(frame)}"
    for position, value in enumerate(frame):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"frame {index}, value {position}: not a number ({quoted(value)})"
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond the float range
            finite = False
        if not finite:
            return f"frame {index}, value {position}: not a finite number ({quoted(value, 20)})"
        if position < HANDEDNESS and abs(value) > MAX_ABS_COORDINATE:
            return (
                f"frame {index}, value {position}: {quoted(value, 20)} m is outside ±{MAX_ABS_COORDINATE} m; "
                "send MediaPipe *world* landmarks (metres, centred on the hand), not image landmarks"
            )
    if frame[HANDEDNESS] not in (0, 1):
        got = quoted(frame[HANDEDNESS], 20)
        return f"frame {index}, value 63 (handedness): must be 0.0 (left) or 1.0 (right), got {got}"
    return None


def check_frames(frames: Sequence[object], min_frames: int, max_frames: int) -> Frames:
    """Validate raw JSON frames and return those that show a hand as a float32 [n, 64] array.

    Frames whose landmarks all lie within MIN_HAND_EXTENT of each other (an app filling its
    buffer while tracking was lost, zeros) carry no pose and are left out; fewer than
    `min_frames` left is an error."""
    if frames and all(isinstance(v, int | float) and not isinstance(v, bool) for v in frames[:FRAME_SIZE]):
        raise FrameError(
            f"landmarks: expected a list of frames, each a list of 64 numbers, got a flat list of {len(frames)} "
            "numbers: send [[x0, y0, z0, ..., handedness], [...], ...]"
        )
    if not min_frames <= len(frames) <= max_frames:
        raise FrameError(f"landmarks: got {len(frames)} frames, need between {min_frames} and {max_frames}")
    for index, frame in enumerate(frames):
        problem = frame_problem(index, frame)
        if problem:
            raise FrameError(problem)
    array = np.asarray(frames, dtype=np.float32)
    hand = array[hand_extent(array) >= MIN_HAND_EXTENT]
    if len(hand) and (problem := layout_problem(hand)):
        raise FrameError(f"landmarks: {problem}")
    if len(hand) < min_frames:
        raise FrameError(
            f"landmarks: only {len(hand)} of {len(array)} frames show a hand, need {min_frames}; the others have all "
            f"21 landmarks within {1000 * MIN_HAND_EXTENT:.0f} mm of each other (a hand's world landmarks span about "
            "80-200 mm), as when tracking is lost: send only frames in which the hand was tracked"
        )
    return hand


def layout_problem(frames: npt.ArrayLike) -> str | None:
    """Why these frames look like a hand's landmarks sent in the wrong value order, or None.

    A hand's bones join neighbouring landmarks, so in MediaPipe's order (landmark-major: x0, y0,
    z0, x1, ...) the mean bone length is about half the mean distance between two landmarks (a
    median of 0.50-0.59 on the real recordings of the benchmarks, 2-D ones too), and regrouping
    the values as if they had been sent coordinate-major (x0 ... x20, y0 ... y20, z0 ... z20)
    scatters the points (that reading scores at least 0.34 higher over any 20 consecutive real
    frames). Frames that were sent coordinate-major are the other way round: the regrouped reading
    is a hand (at most 0.73) and their own reading no better than it (within 0.005). The limit,
    -0.17, sits halfway. Frames that are no hand in either reading are refused as such: over
    `NOT_A_HAND_RATIO`. Random numbers score 1.0 (0.92 at the least over 2,000 draws of 20 frames),
    every landmark but one on a single point 1.5; every 20 consecutive real frames score 0.31-0.72,
    the generator's poses in 3-D and flattened to 2-D up to 0.87 (single frames), and a tight fist
    flattened at the worst of 20,000 orientations 0.93 (0.92 over a recording of it)."""
    arr = np.asarray(frames, dtype=np.float32)
    if len(arr) > LAYOUT_CHECK_FRAMES:  # a median: an even spread gives it (14 KB of work per frame)
        arr = arr[np.linspace(0, len(arr) - 1, LAYOUT_CHECK_FRAMES).round().astype(int)]
    sent = float(np.median(_bone_ratio(landmarks(arr))))
    regrouped = float(np.median(_bone_ratio(arr[:, :HANDEDNESS].reshape(-1, 3, N_LANDMARKS).transpose(0, 2, 1))))
    if regrouped <= 0.75 and sent - regrouped >= -0.17:
        return (
            "the values of each frame look coordinate-major (x0, ..., x20, y0, ..., y20, z0, ..., z20): send "
            "each frame landmark by landmark, x0, y0, z0, x1, y1, z1, ..., z20, then handedness"
        )
    if sent > NOT_A_HAND_RATIO:
        return (
            "the frames do not look like a hand's landmarks: a finger's joints lie no closer together than "
            f"any two landmarks (bone length over landmark distance {sent:.2f}; a hand scores 0.3-0.9); send "
            "MediaPipe's 21 hand landmarks in its order (wrist, then each finger from base to tip)"
        )
    return None


def _bone_ratio(points: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """[n] mean bone length over mean landmark-to-landmark distance, for [n, 21, 3] points."""
    gaps = np.linalg.norm(points[:, :, None, :] - points[:, None, :, :], axis=-1).astype(np.float64)
    bones = np.mean([gaps[:, a, b] for a, b in HAND_EDGES], axis=0)
    return bones / np.maximum(gaps[:, _PAIRS[0], _PAIRS[1]].mean(axis=1), 1e-9)


def hand_extent(frames: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """[n] span (m) of each frame's landmarks along its widest axis."""
    return np.ptp(landmarks(frames), axis=1).max(axis=1).astype(np.float32)


def app_quantize(frames: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """What the apps feed the legacy model: q = round(v / scale) + zero_point, clamped to 0..255."""
    values = np.asarray(frames, dtype=np.float64)
    q = np.round(values / INPUT_SCALE) + INPUT_ZERO_POINT
    return np.clip(q, 0, 255).astype(np.uint8)


def app_view(frames: npt.ArrayLike) -> Frames:
    """The float values a legacy model actually sees after the apps' quantization."""
    q = app_quantize(frames).astype(np.float32)
    return ((q - INPUT_ZERO_POINT) * INPUT_SCALE).astype(np.float32)


def landmarks(frames: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """[n, 21, 3] landmark coordinates of [n, 64] frames."""
    arr = np.asarray(frames, dtype=np.float32)
    return arr[:, :HANDEDNESS].reshape(-1, N_LANDMARKS, 3)


def is_right(frames: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """1.0 for right hands, 0.0 for left; accepts raw (1.0) and app-clamped (0.127) handedness."""
    arr = np.asarray(frames, dtype=np.float32)
    return np.clip(arr[:, HANDEDNESS] * 20.0, 0.0, 1.0)


def normalize(frames: npt.ArrayLike, mirror_left: bool = True) -> npt.NDArray[np.float32]:
    """Translation- and scale-invariant pose features [n, 63], orientation kept.

    Left hands are mirrored onto right hands (x negated), landmarks are centred on their mean
    and divided by the RMS of the centred coordinates. The TensorFlow graph in `model.py` computes the
    same thing, so exported models accept raw frames.
    """
    pts = landmarks(frames).astype(np.float32)
    if mirror_left:
        sign = 2.0 * is_right(frames) - 1.0
        pts = pts * np.stack([sign, np.ones_like(sign), np.ones_like(sign)], axis=-1)[:, None, :]
    centred = pts - pts.mean(axis=1, keepdims=True)
    ms = np.mean(centred**2, axis=(1, 2))
    scale = 1.0 / np.sqrt(np.maximum(ms, MIN_MEAN_SQUARE))
    return (centred * scale[:, None, None]).reshape(-1, HANDEDNESS).astype(np.float32)
