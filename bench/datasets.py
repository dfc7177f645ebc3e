"""The real hand-landmark datasets of `../shared/data`, as frames in the apps' format, and the
accuracy benchmark's block splits of them (`scenarios_for`).

* `ghostouch`: MediaPipe world landmarks exactly as the apps send them (rows shuffled).
* `kinivi-4class`, `tradulibras-libras`: 2-D image keypoints (wrist-relative, max-abs
  normalized) turned into frames: landmarks scaled so the wrist-relative extent is 0.09 m,
  centred on landmark 9, z = 0, handedness 1 (right). Rows are consecutive video frames.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.float32]
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KEYPOINT_EXTENT_M = 0.09


@dataclass
class Dataset:
    name: str
    kind: str  # "world" (3-D MediaPipe world landmarks) or "2d" (image keypoints, z = 0)
    frames: dict[str, Frames]  # per class, in file order
    sequential: bool  # rows are consecutive video frames (block splits needed)
    # Row numbers in the source file: "frames apart" for sequential data. Default: 0..n-1.
    positions: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, frames in self.frames.items():
            self.positions.setdefault(name, np.arange(len(frames)))

    @property
    def classes(self) -> list[str]:
        return list(self.frames)


def _read_labelled_csv(path: Path) -> tuple[list[str], Frames]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r]
    body = rows[1:] if rows[0][0].strip() == "label" else rows
    labels = [r[0].strip() for r in body]
    values = np.asarray([[float(v) for v in r[1:]] for r in body], dtype=np.float32)
    return labels, values


def keypoints_to_frames(keypoints: npt.ArrayLike) -> Frames:
    """[n, 42] wrist-relative, max-abs normalized 2-D keypoints -> [n, 64] frames (z = 0)."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 21, 2) * KEYPOINT_EXTENT_M
    kp = kp - kp[:, 9:10, :]
    pts = np.zeros((len(kp), 21, 3))
    pts[:, :, :2] = kp
    frames = np.zeros((len(kp), 64), np.float32)
    frames[:, :63] = pts.reshape(len(kp), 63)
    frames[:, 63] = 1.0
    return frames


def load_ghostouch(data_dir: Path = DATA_DIR) -> Dataset:
    """paper/rock/scissors of `base_v1_v0_359rows.csv` and `one`, minus rows copied from others.

    The last 21 rows of `incremental_hand_landmarks_one.csv` are exact copies of `paper` rows of
    the v0 base file; they are dropped here (and reported as a note).
    """
    root = data_dir / "ghostouch"
    labels, values = _read_labelled_csv(root / "base_v1_v0_359rows.csv")
    frames: dict[str, Frames] = {}
    for name in ("paper", "rock", "scissors"):
        frames[name] = values[[i for i, lab in enumerate(labels) if lab == name]]
    _, one = _read_labelled_csv(root / "incremental_hand_landmarks_one.csv")
    others = np.concatenate(list(frames.values()))
    gap = np.abs(one[:, None, :] - others[None, :, :]).max(axis=2).min(axis=1)
    copied = gap < 1e-6
    frames["one"] = one[~copied]
    notes = [f"one: dropped {int(copied.sum())} rows that are exact copies of base rows"]
    return Dataset("ghostouch", "world", frames, sequential=False, notes=notes)


def ghostouch_base_v1_mask(dataset: Dataset, data_dir: Path = DATA_DIR) -> dict[str, np.ndarray]:
    """Per base class, which rows (of the v0 file) are also in `base_v1.csv`."""
    labels, values = _read_labelled_csv(data_dir / "ghostouch" / "base_v1.csv")
    masks = {}
    for name in ("paper", "rock", "scissors"):
        v1 = values[[i for i, lab in enumerate(labels) if lab == name]]
        rows = dataset.frames[name]
        gap = np.abs(rows[:, None, :] - v1[None, :, :]).max(axis=2).min(axis=1)
        masks[name] = gap < 1e-6
    return masks


def load_keypoints(name: str, data_dir: Path = DATA_DIR, drop_mislabeled: bool = True) -> Dataset:
    root = data_dir / name
    with (root / "keypoint_classifier_label.csv").open(encoding="utf-8-sig") as f:
        names = [line.strip() for line in f if line.strip()]
    raw = np.loadtxt(root / "keypoint.csv", delimiter=",", dtype=np.float64)
    index = raw[:, 0].astype(int)
    frames = keypoints_to_frames(raw[:, 1:])
    per_class = {names[c]: frames[index == c] for c in range(len(names)) if np.any(index == c)}
    # Positions in the file (rows of one class are consecutive video frames, possibly in several
    # recording blocks): keep them so that "far from the training window" is measured in frames.
    positions = {names[c]: np.flatnonzero(index == c) for c in range(len(names)) if np.any(index == c)}
    notes = []
    if drop_mislabeled:
        for label, rows in mislabeled_runs(per_class, positions).items():
            keep = ~np.isin(positions[label], rows)
            per_class[label], positions[label] = per_class[label][keep], positions[label][keep]
            notes.append(f"{label}: dropped file rows {rows[0]}-{rows[-1]} ({len(rows)} rows), "
                         "a run of another class's hand shape")  # fmt: skip
    return Dataset(name, "2d", per_class, sequential=True, positions=positions, notes=notes)


MISLABELED_RUN = 10  # consecutive rows; shorter runs are transitions between poses


def mislabeled_runs(frames: dict[str, Frames], positions: dict[str, npt.NDArray[np.int64]]) -> dict[str, list[int]]:
    """File rows of each class that hold another class's pose: runs of at least MISLABELED_RUN
    consecutive rows whose hand shape (`negatives.shape`) is less than half as far from some
    frame of another class as from any frame of their own class recorded 50+ rows away."""
    from ghostouch.engine import negatives

    shapes = {name: negatives.shape(f) for name, f in frames.items()}
    found: dict[str, list[int]] = {}
    for name, own in shapes.items():
        pos = positions[name]
        d2 = (own**2).sum(1)[:, None] + (own**2).sum(1)[None, :] - 2.0 * own @ own.T
        far = np.abs(pos[:, None] - pos[None, :]) > 50
        to_own = np.where(far, np.sqrt(np.maximum(d2, 0.0)), np.inf).min(axis=1)
        others = np.concatenate([s for other, s in shapes.items() if other != name])
        suspect = pos[negatives.nearest_distance(own, others) < 0.5 * to_own]
        runs = np.split(suspect, np.flatnonzero(np.diff(suspect) != 1) + 1) if len(suspect) else []
        rows = [int(r) for run in runs if len(run) >= MISLABELED_RUN for r in run]
        if rows:
            found[name] = rows
    return found


def load_all(data_dir: Path = DATA_DIR) -> list[Dataset]:
    return [
        load_ghostouch(data_dir),
        load_keypoints("kinivi-4class", data_dir),
        load_keypoints("tradulibras-libras", data_dir),
    ]


# --- Block splits for the incremental-personalization benchmark --------------------------

Index = npt.NDArray[np.int64]
GAP = 100  # evaluation frames are at least this many frames from every training window
NEW_WINDOW = 100
BASE_WINDOW = 200
MAX_TEST = 400  # evaluation frames per class and repetition (random subsample)


@dataclass
class Scenario:
    dataset: Dataset
    rep: int
    base: list[str]
    new: list[str]
    unknown: list[str]
    train: dict[str, Index] = field(default_factory=dict)
    test: dict[str, Index] = field(default_factory=dict)
    probe: dict[str, Index] = field(default_factory=dict)  # held-out block (duplicate probe)

    def frames(self, name: str, rows: Index) -> Frames:
        return self.dataset.frames[name][rows]


def windows(pos: Index, length: int) -> list[int]:
    """Start rows of windows of `length` rows that are consecutive frames."""
    return [s for s in range(len(pos) - length + 1) if pos[s + length - 1] - pos[s] == length - 1]


def _far(pos: Index, taken: Index) -> npt.NDArray[np.bool_]:
    if len(taken) == 0:
        return np.ones(len(pos), bool)
    return np.asarray(np.abs(pos[:, None] - pos[taken][None, :]).min(axis=1) >= GAP)


def _block_split(ds: Dataset, name: str, length: int, rng: np.random.Generator) -> tuple:
    pos = ds.positions[name]
    # Prefer windows that leave at least a probe block and some test frames far away; shorten
    # the window of a short class (down to NEW_WINDOW) rather than leave nothing to test.
    for size in sorted({length, NEW_WINDOW}, reverse=True):
        starts = windows(pos, size) or [0]
        far_count = [int(_far(pos, np.arange(s, s + size)).sum()) for s in starts]
        good = [s for s, c in zip(starts, far_count, strict=True) if c >= NEW_WINDOW + 50]
        if good:
            break
    length = size
    s = int(rng.choice(good)) if good else starts[int(np.argmax(far_count))]
    train = np.arange(s, min(s + length, len(pos)))
    far = np.flatnonzero(_far(pos, train))
    probe_starts = [i for i in range(len(far) - NEW_WINDOW + 1)
                    if far[i + NEW_WINDOW - 1] - far[i] == NEW_WINDOW - 1]  # fmt: skip
    probe = far[:0]
    if probe_starts:
        p = int(rng.choice(probe_starts))
        probe = far[p : p + NEW_WINDOW]
    test = far if len(far) <= MAX_TEST else np.sort(rng.choice(far, MAX_TEST, replace=False))
    return train, test, probe


def sequential_scenarios(ds: Dataset, reps: int, seed: int) -> list[Scenario]:
    out = []
    classes = ds.classes
    for rep in range(reps):
        rng = np.random.default_rng(seed + 1000 * rep)
        unknown = classes[rep % len(classes)]
        rest = [c for c in classes if c != unknown]
        rest = [rest[i] for i in rng.permutation(len(rest))]
        n_base = math.ceil(len(rest) / 2)
        sc = Scenario(ds, rep, rest[:n_base], rest[n_base:], [unknown])
        for name in classes:
            length = BASE_WINDOW if name in sc.base else NEW_WINDOW
            if name == unknown:
                train, _, _ = _block_split(ds, name, NEW_WINDOW, rng)
                sc.probe[name] = train  # a genuinely new gesture posted to the models
                all_rows = np.arange(len(ds.positions[name]))
                sc.test[name] = all_rows if len(all_rows) <= MAX_TEST else np.sort(
                    rng.choice(all_rows, MAX_TEST, replace=False))  # fmt: skip
                continue
            sc.train[name], sc.test[name], sc.probe[name] = _block_split(ds, name, length, rng)
        out.append(sc)
    return out


def ghostouch_scenarios(ds: Dataset, reps: int) -> list[Scenario]:
    """Rows are shuffled: base = base_v1 rows, old-class test = the v0-only rows; `one` is
    trained from its first 60 rows and tested on the rest. Later repetitions leave one base
    class out as the never-trained gesture."""
    masks = ghostouch_base_v1_mask(ds)
    base = ["paper", "rock", "scissors"]
    out = []
    for rep in range(min(reps, 4)):
        unknown = [] if rep == 0 else [base[rep - 1]]
        sc = Scenario(ds, rep, [b for b in base if b not in unknown], ["one"], unknown)
        for name in base:
            rows = np.arange(len(ds.frames[name]))
            if name in unknown:
                sc.test[name] = rows
                sc.probe[name] = rows[masks[name]][:NEW_WINDOW]
            else:
                sc.train[name], sc.test[name] = rows[masks[name]], rows[~masks[name]]
                sc.probe[name] = sc.test[name]
        sc.train["one"], sc.test["one"] = np.arange(60), np.arange(60, len(ds.frames["one"]))
        sc.probe["one"] = sc.test["one"]
        out.append(sc)
    return out


def scenarios_for(ds: Dataset, reps: int, seed: int) -> list[Scenario]:
    return ghostouch_scenarios(ds, reps) if ds.name == "ghostouch" else sequential_scenarios(
        ds, reps, seed)  # fmt: skip
