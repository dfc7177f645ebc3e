"""The issue's outside check, at engine level: a base imported from whole recordings, one new
gesture from one window, held-out blocks of every class tested.

    .venv/bin/python -m bench.import_protocol [--reps 8] [--no-baseline] [--write]

Per repetition and 2-D dataset: one class is never trained (unknown), one is the new gesture, the
others form the base. Each class gets a held-out block of consecutive frames (200, or a third of a
short class). The base is trained on every frame at least 100 frames away from its classes'
blocks, as `ghostouch base import` trains on the whole file. The new gesture comes from one window
of 100 consecutive frames outside its block. The child is trained as the worker trains it: the
parent's gestures on their newest `max_frames_per_gesture` frames (`jobs/training.py`), after the
duplicate check (the parent's exported model, then every stored frame of its gestures). The
child's uint8 model is evaluated through LiteRT on the held-out blocks; the first 100 frames of
each base class's block, posted under a new name, must be refused as a duplicate. The seed-style
baseline runs in the same process on the same frames.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np
import numpy.typing as npt

from bench.accuracy import (
    Gestures,
    Tally,
    baseline,
    ours,
    parse_config,
    ratios,
    recognized,
    replace_section,
    table,
)  # fmt: skip
from bench.datasets import GAP, NEW_WINDOW, Dataset, load_keypoints, windows
from ghostouch.config import Settings

Frames = npt.NDArray[np.float32]
CAP = int(Settings.model_fields["max_frames_per_gesture"].default)
BLOCK = 200
SECTION = "## Imported base (the issue's outside check, engine level)"


def split(
    ds: Dataset, name: str, rng: np.random.Generator, need_window: bool = False
) -> tuple[Frames, Frames, npt.NDArray[np.int64]] | None:
    """(held-out block, the frames at least `GAP` frames away from it, their row numbers); with
    `need_window`, such that those frames hold NEW_WINDOW consecutive ones (None if none do).
    A class too short for that at GAP frames (Libras B) gets the largest gap that fits, down to 25."""
    pos = ds.positions[name]
    size = min(BLOCK, len(pos) // 3)
    starts = rng.permutation(windows(pos, size))
    for gap in (GAP, 50, 25):
        for start in starts:
            block = np.arange(start, start + size)
            far = np.abs(pos[:, None] - pos[block][None, :]).min(axis=1) >= gap
            if not need_window or windows(pos[far], NEW_WINDOW):
                return ds.frames[name][block], ds.frames[name][far], pos[far]
    return None


def run_rep(ds: Dataset, rep: int, system: tuple, tally: Tally) -> None:
    train, dup, _ = system
    rng = np.random.default_rng(rep)
    classes = ds.classes
    unknown = classes[rep % len(classes)]
    rest = [c for c in classes if c != unknown]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    # The new gesture: the last class of the shuffled order with room for a block and a window.
    new = next(c for c in reversed(rest) if split(ds, c, np.random.default_rng(rep), True))
    base = [c for c in rest if c != new]
    blocks, outside, rows = {}, {}, {}
    for name in classes:
        parts = split(ds, name, rng, need_window=name != unknown)  # trained classes keep >= a window
        if parts is None:
            raise ValueError(f"{ds.name}/{name}: too short for a held-out block and a window")
        blocks[name], outside[name], rows[name] = parts
    parent, lite, _ = train([(c, outside[c]) for c in base], None)
    # The worker's duplicate check compares with every stored frame of the parent's gestures;
    # the child trains on their newest CAP frames (jobs/training.py).
    stored: Gestures = [(c, outside[c]) for c in base]
    for c in base:
        tally.dup_tp.append(dup(parent, lite, stored, blocks[c][:NEW_WINDOW]))
    start = int(rng.choice(windows(rows[new], NEW_WINDOW)))  # consecutive frames, outside the block
    new_frames = outside[new][start : start + NEW_WINDOW]
    tally.dup_fp.append(dup(parent, lite, stored, new_frames))
    gestures = [*[(c, outside[c][-CAP:]) for c in base], (new, new_frames)]
    _, child_lite, seconds = train(gestures, parent)
    tally.seconds.append(seconds)
    for i, (name, _) in enumerate(gestures):
        proba = child_lite.predict_proba(blocks[name])
        (tally.new if name == new else tally.old).append(recognized(proba, i))
    proba = child_lite.predict_proba(blocks[unknown])
    tally.false_accept.append(float(np.mean(proba.max(axis=1) >= 0.5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--datasets", nargs="*", default=["kinivi-4class", "tradulibras-libras"])
    parser.add_argument("--config", help="JSON overrides of EngineConfig (experiments)")
    parser.add_argument("--write", action="store_true", help="update this section of RESULTS.md")
    args = parser.parse_args()
    systems = {"ours": ours(parse_config(args.config))}
    if not args.no_baseline:
        systems["baseline"] = baseline()
    results: dict[tuple[str, str], dict[str, float]] = {}
    t0 = time.perf_counter()
    for name in args.datasets:
        ds = load_keypoints(name)
        for system_name, system in systems.items():
            tally = Tally()
            for rep in range(args.reps):
                run_rep(ds, rep, system, tally)
            results[(f"{name} (2d)", system_name)] = tally.row()
            print(f"[{name}] {system_name}: {tally.row()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    columns = "new recall, old acc, unknown FA, dup TP, dup FP, s/incr"
    summary = table(results).replace(" nan % |", " - |") + "\n\n" + ratios(results).replace("nanx", "n/a")
    print("\n" + summary)
    if args.write:
        command = "`.venv/bin/python -m bench.import_protocol " + " ".join(sys.argv[1:]) + "`"
        body = (
            f"{datetime.date.today().isoformat()}, {command} ({time.perf_counter() - t0:.0f} s; "
            f"held-out blocks, parent gestures capped at the newest {CAP} frames; columns as in "
            f"the Accuracy section: {columns}; u8 columns not measured here)\n\n{summary}"
        )
        replace_section(SECTION, f"{SECTION}\n\n{body.strip()}\n")


if __name__ == "__main__":
    main()
