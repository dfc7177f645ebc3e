"""The default lineage on real frames: children of the synthetic base_v1, as most apps get them.

Apps that never import a base start from the synthetic `base_v1` (paper, rock, scissors from
many generated hands, trained without the familiarity gate: `bases.MANY_HANDS_CONFIG`). Here that
base is built as `ghostouch serve` provisions it, then one child per new gesture is trained as the
worker trains it (the parent's frames plus one synthetic user's recording of the new gesture,
the lineage's engine settings). Each model is run as uint8 TFLite through LiteRT and measured on:

* real base_v1: the real `base_v1.csv` frames shown as the right gesture (top >= 0.5);
* real one: the real `one` recording (a gesture none of these models learned, except the child
  that learned the synthetic `one`, which is left out) shown as some gesture;
* re-recorded new: a fresh synthetic recording of the child's new gesture, shown as it;
* never taught: synthetic recordings of the other new gestures, shown as some gesture (for the
  base: the same recordings).

The base alone, in the same run, is the baseline of the ratios. Needs `../shared/data`.

    .venv/bin/python -m bench.default_lineage [--reps 1] [--config JSON] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date

import numpy as np

from bench.accuracy import parse_config, replace_section
from bench.datasets import DATA_DIR, load_ghostouch
from bench.synthetic_world import NEW, real_base_share, shown
from ghostouch.bases import BASE_V1_LABELS, MANY_HANDS_CONFIG, read_csv, synthetic_base_data
from ghostouch.engine import hands
from ghostouch.engine.trainer import GestureFrames, ParentModel, train_gesture_model
from ghostouch.engine.verify import LiteModel

HEADING = "## The default lineage on real frames"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="synthetic users per new gesture")
    parser.add_argument("--config", default="{}", help="JSON overrides of the lineage's EngineConfig (experiments)")
    parser.add_argument("--write", action="store_true", help="update the section of bench/RESULTS.md")
    args = parser.parse_args()
    if args.write and args.config != "{}":
        sys.exit("--write records the lineage's own settings only")
    config = parse_config(args.config, MANY_HANDS_CONFIG)  # the lineage's settings, overridden
    if not (DATA_DIR / "ghostouch" / "base_v1.csv").exists():
        sys.exit(f"needs the real recordings at {DATA_DIR}")
    started = time.perf_counter()
    real = read_csv(DATA_DIR / "ghostouch" / "base_v1.csv")
    real_one = load_ghostouch().frames["one"]
    base = [GestureFrames(n, f) for n, f in synthetic_base_data().items()]
    parent = LiteModel.load(train_gesture_model(base, config).tflite_uint8)
    from_parent = ParentModel(parent, [g.name for g in base])  # as the worker trains a child
    base_real = real_base_share(parent, real)
    base_one = float(np.mean(shown(parent, real_one) >= 0))
    children: dict[str, list[float]] = {"real base_v1": [], "real one": [], "re-recorded new": [], "never taught": []}
    per_class: list[list[float]] = []
    base_never: list[float] = []
    seconds = []
    for rep in range(args.reps):
        for k, new in enumerate(NEW):
            rng = np.random.default_rng(1000 * rep + k)
            recording = hands.generate_recording(new, 100, rng, handedness=1.0)
            t0 = time.perf_counter()
            gestures = [*base, GestureFrames(new, recording)]
            child = LiteModel.load(train_gesture_model(gestures, config, parent=from_parent).tflite_uint8)
            seconds.append(time.perf_counter() - t0)
            per_class.append(real_base_share(child, real))
            children["real base_v1"].append(float(np.mean(per_class[-1])))
            if new != "one":
                children["real one"].append(float(np.mean(shown(child, real_one) >= 0)))
            again = hands.generate_recording(new, 100, rng, handedness=1.0)
            children["re-recorded new"].append(float(np.mean(shown(child, again) == len(BASE_V1_LABELS))))
            never = [hands.generate_recording(u, 100, rng, handedness=1.0) for u in NEW if u != new]
            children["never taught"].append(float(np.mean([np.mean(shown(child, f) >= 0) for f in never])))
            base_never.append(float(np.mean([np.mean(shown(parent, f) >= 0) for f in never])))  # same poses
            latest = ", ".join(f"{m} {100 * v[-1]:.1f} %" for m, v in children.items() if v)
            print(f"rep {rep} {new}: {latest}", flush=True)
    elapsed = time.perf_counter() - started
    child_mean = {m: 100 * float(np.mean(v)) for m, v in children.items()}
    each = ", ".join(
        f"{n} {100 * float(np.mean([c[i] for c in per_class])):.0f} % (base {100 * base_real[i]:.0f} %)"
        for i, n in enumerate(BASE_V1_LABELS)
    )
    lines = [
        "| model | real base_v1 | real one | re-recorded new | never taught |",
        "|---|---|---|---|---|",
        f"| synthetic base_v1 alone (baseline) | {100 * np.mean(base_real):.1f} % | {100 * base_one:.1f} % | - "
        f"| {100 * np.mean(base_never):.1f} % |",
        f"| its children ({len(per_class)}) | " + " | ".join(f"{child_mean[m]:.1f} %" for m in children) + " |",
    ]
    ratio_real = child_mean["real base_v1"] / (100 * float(np.mean(base_real)))
    text = "\n".join(lines) + (
        f"\n\nChildren / base: real base_v1 {ratio_real:.2f}x. Per class, children (base): {each}. "
        f"Median train + export + verify per child {statistics.median(seconds):.2f} s."
    )
    print(f"\n{text}\nrun time {elapsed:.0f} s")
    if args.write:
        command = "`.venv/bin/python -m bench.default_lineage" + (f" --reps {args.reps}" if args.reps != 1 else "")
        replace_section(
            HEADING,
            f"{HEADING}\n\n{date.today()}, {command} --write` ({len(per_class)} children, {elapsed:.0f} s; the "
            f"module docstring says what each column counts)\n\n{text}\n",
        )


if __name__ == "__main__":
    main()
