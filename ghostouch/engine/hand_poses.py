"""Joint-angle table of the synthetic hand: angle layout, range of motion, and named poses.

All angles are in degrees. A hand configuration is a vector of `N_ANGLES` values:

* for each finger (index, middle, ring, pinky): MCP flexion, MCP abduction (positive = towards
  the thumb, i.e. radial), PIP flexion, DIP flexion;
* for the thumb: CMC spread (radial abduction in the palm plane), CMC lift (palmar abduction,
  out of the palm plane), CMC pronation (axial rotation that turns the thumb pad towards the
  fingers during opposition), MCP flexion, IP flexion;
* palm cupping (the ring and little metacarpals fold towards the palm, deepening the
  transverse metacarpal arch).

Ranges of motion follow the usual clinical values (AAOS / Hume et al.): MCP flexion about
90 deg with up to 20-30 deg hyperextension, PIP flexion about 100-110 deg, DIP about 80 deg,
MCP abduction about +-20 deg, thumb MCP 0-60 deg, thumb IP -15..80 deg.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FINGERS: tuple[str, ...] = ("index", "middle", "ring", "pinky")
FINGER_ANGLES = 4  # mcp flexion, mcp abduction, pip flexion, dip flexion
THUMB = 4 * FINGER_ANGLES  # offset of the thumb block
THUMB_ANGLES = 5  # cmc spread, cmc lift, cmc pronation, mcp flexion, ip flexion
CUP = THUMB + THUMB_ANGLES
N_ANGLES = CUP + 1
# How the four fingers' MCP abduction (index..little) changes per degree of "fan" when a hand
# spreads its fingers or closes them (positive: towards the thumb, so the index moves that way
# and the ring and little fingers the other way, the little finger most).
FAN: tuple[float, ...] = (1.0, 0.0, -0.6, -1.2)

Finger = tuple[float, float, float, float]
Thumb = tuple[float, float, float, float, float]

# Range of motion (low, high) per angle slot, degrees.
_FINGER_ROM: tuple[tuple[float, float], ...] = (
    (-20.0, 90.0),
    (-20.0, 20.0),
    (0.0, 105.0),
    (-5.0, 80.0),
)
_THUMB_ROM: tuple[tuple[float, float], ...] = (
    (-5.0, 65.0),  # spread
    (0.0, 75.0),  # lift
    (-30.0, 60.0),  # pronation
    (-10.0, 60.0),  # mcp
    (-15.0, 80.0),  # ip
)
ROM: tuple[tuple[float, float], ...] = (*(_FINGER_ROM * 4), *_THUMB_ROM, (0.0, 25.0))

# Standard deviation of the per-frame variation of each slot around a pose's nominal angle,
# at variation=1 (degrees). Flexion varies more than abduction; the thumb is the least precise.
_FINGER_SD: tuple[float, ...] = (8.0, 3.5, 8.0, 7.0)
_THUMB_SD: tuple[float, ...] = (6.0, 6.0, 7.0, 7.0, 8.0)
ANGLE_SD: tuple[float, ...] = (*(_FINGER_SD * 4), *_THUMB_SD, 4.0)

# Finger templates (mcp, abduction, pip, dip).
STRAIGHT: Finger = (6.0, 0.0, 6.0, 4.0)
CURLED: Finger = (70.0, 0.0, 88.0, 45.0)  # relaxed curl of a finger not in use
LOOSE_FIST: Finger = (78.0, 0.0, 92.0, 48.0)  # an unclenched fist (rock)
# A ring finger held down next to an extended middle finger cannot curl fully: the juncturae
# tendinum tie its extensor tendon to the middle finger's.
TETHERED: Finger = (55.0, 0.0, 75.0, 40.0)
FIST: Finger = (88.0, 0.0, 102.0, 58.0)  # tight fist


def spread(finger: Finger, abduction: float) -> Finger:
    """`finger` with its MCP abduction replaced."""
    return (finger[0], abduction, finger[2], finger[3])


# Thumb templates (spread, lift, pronation, mcp, ip).
THUMB_OPEN: Thumb = (48.0, 18.0, 0.0, 6.0, 6.0)  # extended and abducted, as in an open hand
THUMB_WIDE: Thumb = (58.0, 20.0, 0.0, 0.0, 0.0)  # stretched out (call sign)
THUMB_WRAP: Thumb = (24.0, 55.0, 30.0, 35.0, 50.0)  # over the middle phalanges of a fist
THUMB_ACROSS: Thumb = (8.0, 25.0, 30.0, 55.0, 65.0)  # folded across the palm
THUMB_UP: Thumb = (58.0, 12.0, 0.0, 0.0, -8.0)  # extended, standing off the side of a fist
THUMB_OPPOSED: Thumb = (28.0, 50.0, 40.0, 18.0, 18.0)  # opposed towards the index tip


@dataclass(frozen=True)
class Pose:
    """A named hand pose: nominal joint angles plus its canonical orientation.

    `orientation` holds (in-plane rotation, tilt towards the camera, twist about the hand axis)
    in degrees, applied to a right hand held fingers-up with the palm facing the camera.
    `aim`, when set, replaces the in-plane rotation: (from landmark, to landmark, image angle)
    rotates the hand in the image plane so the nominal vector between the two landmarks points
    along the image direction at that angle (0 = up, 90 = image right, 180 = down, -90 = left).
    `mirror` names the pose a left hand mirrors (a left hand is generated as the mirror image
    of a right hand in the `mirror` pose), so poses defined by an image direction stay defined
    by the same image direction for both hands.
    `contact` pulls the thumb tip and index tip together (ok, pinch).
    """

    name: str
    fingers: tuple[Finger, Finger, Finger, Finger]
    thumb: Thumb
    cup: float = 0.0
    orientation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    aim: tuple[int, int, float] | None = None
    mirror: str = ""
    contact: bool = False
    angles: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        values: list[float] = []
        for finger in self.fingers:
            values.extend(finger)
        values.extend(self.thumb)
        values.append(self.cup)
        object.__setattr__(self, "angles", tuple(values))
        if not self.mirror:
            object.__setattr__(self, "mirror", self.name)


_SCISSORS_THUMB: Thumb = (8.0, 45.0, 35.0, 40.0, 30.0)  # over the curled ring and little finger
_POINTING = (STRAIGHT, CURLED, CURLED, CURLED)

POSES: dict[str, Pose] = {
    pose.name: pose
    for pose in (
        Pose(
            "paper",
            (spread(STRAIGHT, 10.0), STRAIGHT, spread(STRAIGHT, -8.0), spread(STRAIGHT, -16.0)),
            THUMB_OPEN,
        ),
        Pose("rock", (LOOSE_FIST,) * 4, THUMB_WRAP, cup=15.0),
        Pose(
            "scissors",
            (spread(STRAIGHT, 12.0), spread(STRAIGHT, -9.0), TETHERED, CURLED),
            _SCISSORS_THUMB,
            cup=10.0,
        ),
        Pose("one", _POINTING, THUMB_WRAP, cup=8.0),
        Pose(
            "three",
            (spread(STRAIGHT, 9.0), spread(STRAIGHT, -5.0), CURLED, CURLED),
            THUMB_OPEN,
            cup=8.0,
        ),
        Pose(
            "four",
            (spread(STRAIGHT, 6.0), STRAIGHT, spread(STRAIGHT, -5.0), spread(STRAIGHT, -10.0)),
            THUMB_ACROSS,
        ),
        Pose(
            "ok",
            ((50.0, 0.0, 70.0, 40.0), STRAIGHT, spread(STRAIGHT, -6.0), spread(STRAIGHT, -12.0)),
            THUMB_OPPOSED,
            contact=True,
        ),
        Pose("call", (CURLED, CURLED, CURLED, spread(STRAIGHT, -18.0)), THUMB_WIDE, cup=10.0),
        Pose("thumbs_up", (FIST, FIST, FIST, FIST), THUMB_UP, cup=12.0, aim=(2, 4, 0.0)),
        Pose("thumbs_down", (FIST, FIST, FIST, FIST), THUMB_UP, cup=12.0, aim=(2, 4, 180.0)),
        Pose("point_left", _POINTING, THUMB_WRAP, cup=8.0, aim=(5, 8, -90.0), mirror="point_right"),
        Pose("point_right", _POINTING, THUMB_WRAP, cup=8.0, aim=(5, 8, 90.0), mirror="point_left"),
        Pose(
            "pinch",
            ((55.0, 0.0, 60.0, 35.0), CURLED, CURLED, CURLED),
            THUMB_OPPOSED,
            cup=8.0,
            contact=True,
        ),
        Pose(
            "rock_on",
            (STRAIGHT, CURLED, CURLED, spread(STRAIGHT, -8.0)),
            THUMB_WRAP,
            cup=8.0,
        ),
    )
}


def clip_angles(angles: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """`angles` (..., N_ANGLES) clipped to the range of motion."""
    low = np.array([r[0] for r in ROM])
    high = np.array([r[1] for r in ROM])
    return np.clip(angles, low, high)


def random_angles(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """(n, N_ANGLES) joint angles anywhere in the range of motion. Half of the fingers move
    their joints independently, the other half curl them together (DIP following PIP), as real
    fingers mostly do."""
    low = np.array([r[0] for r in ROM])
    high = np.array([r[1] for r in ROM])
    angles = rng.uniform(low, high, (n, N_ANGLES))
    curl = rng.uniform(0.0, 1.0, (n, 4))
    coupled = rng.random((n, 4)) < 0.5
    for finger in range(4):
        j = FINGER_ANGLES * finger
        together = np.stack(
            [
                curl[:, finger] * 90.0 + rng.normal(0.0, 10.0, n),
                curl[:, finger] * 100.0 + rng.normal(0.0, 10.0, n),
                curl[:, finger] * 60.0 + rng.normal(0.0, 10.0, n),
            ],
            axis=1,
        )
        slots = [j, j + 2, j + 3]
        angles[:, slots] = np.where(coupled[:, finger, None], together, angles[:, slots])
    return clip_angles(angles)
