"""Is a new recording a gesture the parent model already knows?

The question the user cares about is whether their phone would already take the new pose for
an existing gesture. So the check runs the parent's exported model, exactly as the app does, on
the new frames: when most frames are confidently recognized as one existing gesture, the new
gesture duplicates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ghostouch.engine.verify import LiteModel

# Share of the new frames that must be recognized (top probability >= 0.5) as one existing
# gesture for the recording to count as a duplicate of it. On the accuracy benchmark
# (bench/accuracy.py) re-recordings of a known gesture score 0.9-1.0, while genuinely new
# gestures that the parent partly takes for a known one mostly score 0.55-0.8; 0.6 refused those.
DUPLICATE_SHARE = 0.8
RECOGNIZED_PROBABILITY = 0.5


@dataclass(frozen=True)
class DuplicateVerdict:
    is_duplicate: bool
    gesture: str | None  # the existing gesture most frames were taken for
    similarity: float  # share of new frames recognized as that gesture
    mean_probability: float  # its mean probability over the new frames
    shares: dict[str, float]  # share of frames recognized as each existing gesture

    def as_dict(self) -> dict[str, object]:
        return {
            "is_duplicate": self.is_duplicate,
            "existing_gesture": self.gesture,
            "similarity": round(self.similarity, 4),
            "mean_probability": round(self.mean_probability, 4),
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
        }


def check_duplicate(
    parent: LiteModel,
    labels: list[str],
    frames: npt.NDArray[np.float32],
    ignore: str | None = None,
    share: float = DUPLICATE_SHARE,
) -> DuplicateVerdict:
    """Compare the new frames with the parent's gestures (all but `ignore`, a refined gesture)."""
    proba = parent.predict_proba(frames)[:, : len(labels)]
    top = np.argmax(proba, axis=1)
    confident = proba.max(axis=1) >= RECOGNIZED_PROBABILITY
    shares = {name: float(np.mean(confident & (top == i))) for i, name in enumerate(labels)}
    candidates = {k: v for k, v in shares.items() if k != ignore}
    if not candidates:
        return DuplicateVerdict(False, None, 0.0, 0.0, shares)
    best = max(candidates, key=lambda k: candidates[k])
    mean_p = float(np.mean(proba[:, labels.index(best)]))
    return DuplicateVerdict(candidates[best] >= share, best, candidates[best], mean_p, shares)
