"""World-landmark personalization on synthetic one-hand recordings: the familiarity gate's effect.

The real world-landmark set has four gestures only, so whether a world model shows poses it was
never taught as a gesture is measured here on the synthetic hand generator too. Each repetition
is one user: paper, rock and scissors recorded (100 consecutive frames each, one hand), then a
new gesture from one recording, through the worker's engine path (`train_gesture_model`, the
uint8 model run with LiteRT and app-style quantization). Then, from other hands:

* re-recordings: a fresh recording of each trained gesture, share shown as it (top >= 0.5);
* other people: frames of each trained gesture from many random hands, share shown as it;
* never taught: a recording of each other pose of the list, share shown as some gesture.

Both engines run on the same recordings in the same process: the engine without the gate (as
for lineages of many hands, `bases.MANY_HANDS_CONFIG`) is the baseline the ratios refer to.
When `../shared/data` is there, it also shows why many hands go without the gate: the synthetic
base_v1 (many synthetic hands) with and without it, on the real `base_v1.csv`.

    .venv/bin/python -m bench.synthetic_world [--reps 2] [--config JSON] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from typing import Any

import numpy as np

from bench.accuracy import parse_config, replace_section
from ghostouch.bases import BASE_V1_LABELS, MANY_HANDS_CONFIG, read_csv, synthetic_base_data
from ghostouch.engine import hands
from ghostouch.engine.trainer import EngineConfig, GestureFrames, train_gesture_model
from ghostouch.engine.verify import LiteModel, decisions

BASE = ("paper", "rock", "scissors")
NEW = ("one", "three", "four", "ok", "call", "thumbs_up", "pinch", "rock_on")
HEADING = "## World-landmark models get the gate too"
COLUMNS = ("re-recorded old", "re-recorded new", "other people", "never taught", "s/incr")


def shown(model: LiteModel, frames: np.ndarray) -> np.ndarray:
    return decisions(model.predict_proba(frames))


def real_base_share(model: LiteModel, real: dict[str, np.ndarray]) -> list[float]:
    """Share of the real base_v1.csv frames of each base gesture shown as that gesture."""
    return [float(np.mean(shown(model, real[n]) == i)) for i, n in enumerate(BASE_V1_LABELS)]


def one_user(new: str, seed: int, configs: dict[str, EngineConfig]) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    names = (*BASE, new)
    recorded = [GestureFrames(n, hands.generate_recording(n, 100, rng, handedness=1.0)) for n in names]
    test_seed = int(rng.integers(1 << 30))
    out: dict[str, dict[str, Any]] = {}
    for label, cfg in configs.items():
        t0 = time.perf_counter()
        lite = LiteModel.load(train_gesture_model(recorded, cfg).tflite_uint8)
        seconds = time.perf_counter() - t0
        test = np.random.default_rng(test_seed)  # the same test frames for every engine
        again = [float(np.mean(shown(lite, hands.generate_recording(n, 100, test)) == i)) for i, n in enumerate(names)]
        people = [float(np.mean(shown(lite, hands.generate_pose(n, 100, test)) == i)) for i, n in enumerate(names)]
        never = {u: float(np.mean(shown(lite, hands.generate_recording(u, 100, test)) >= 0)) for u in NEW if u != new}
        out[label] = {"again": again, "people": people, "never": never, "seconds": seconds}
    return out


def synthetic_base_on_real_frames(configs: dict[str, EngineConfig]) -> str:
    """Share of real base_v1.csv frames shown as the right gesture by the synthetic base."""
    from bench.datasets import DATA_DIR

    path = DATA_DIR / "ghostouch" / "base_v1.csv"
    if not path.exists():
        return f"synthetic base on real frames: not measured (no {path})"
    real = read_csv(path)
    data = synthetic_base_data()
    base = [GestureFrames(n, data[n]) for n in BASE_V1_LABELS]
    parts = []
    for label, cfg in configs.items():
        lite = LiteModel.load(train_gesture_model(base, cfg).tflite_uint8)
        right = real_base_share(lite, real)
        each = ", ".join(f"{n} {100 * r:.0f} %" for n, r in zip(BASE_V1_LABELS, right, strict=True))
        parts.append(f"{label}: {100 * np.mean(right):.1f} % ({each})")
    return "synthetic base_v1 on the real base_v1.csv, shown as the right gesture: " + "; ".join(parts)


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "re-recorded old": float(np.mean([r["again"][:3] for r in runs])),
        "re-recorded new": float(np.mean([r["again"][3] for r in runs])),
        "other people": float(np.mean([r["people"] for r in runs])),
        "never taught": float(np.mean([v for r in runs for v in r["never"].values()])),
        "s/incr": statistics.median(r["seconds"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="users per new gesture")
    parser.add_argument("--config", default="{}", help="JSON overrides of EngineConfig for the gated engine")
    parser.add_argument("--write", action="store_true", help="update the section of bench/RESULTS.md")
    args = parser.parse_args()
    configs = {"no gate (baseline)": MANY_HANDS_CONFIG, "engine": parse_config(args.config)}
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in configs}
    per_pose: dict[str, dict[str, list[float]]] = {label: {} for label in configs}
    for rep in range(args.reps):
        for k, new in enumerate(NEW):
            for label, result in one_user(new, 1000 * rep + k, configs).items():
                runs[label].append(result)
                for pose, share in result["never"].items():
                    per_pose[label].setdefault(pose, []).append(share)
            print(f"rep {rep} new {new}: " + "; ".join(f"{lb} {runs[lb][-1]['never']}" for lb in configs), flush=True)
    summary = {label: summarize(r) for label, r in runs.items()}
    lines = ["| engine | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label, s in summary.items():
        cells = [f"{s[c]:.2f}" if c == "s/incr" else f"{100 * s[c]:.1f} %" for c in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base, ours = summary["no gate (baseline)"], summary["engine"]
    ratios = ", ".join(f"{c}: {ours[c] / base[c]:.2f}x" if base[c] else f"{c}: n/a" for c in COLUMNS)
    poses = ", ".join(
        f"{p} {100 * np.mean(per_pose['no gate (baseline)'][p]):.0f} -> {100 * np.mean(per_pose['engine'][p]):.0f} %"
        for p in NEW
    )
    transfer = synthetic_base_on_real_frames(configs)
    elapsed = time.perf_counter() - started
    table = "\n".join(lines)
    print(f"\n{table}\n\nengine / baseline: {ratios}\nnever taught, per pose: {poses}\n{transfer}")
    print(f"run time {elapsed:.0f} s")
    if args.write:
        command = "`.venv/bin/python -m bench.synthetic_world" + (f" --reps {args.reps}" if args.reps != 2 else "")
        command += (f" --config '{args.config}'" if args.config != "{}" else "") + " --write`"
        replace_section(
            HEADING,
            f"{HEADING}\n\n{date.today()}, {command} ({len(NEW) * args.reps} users, {elapsed:.0f} s; "
            f"the module docstring says what each column counts; median s/incr = train + export + verify)\n\n"
            f"{table}\n\nEngine / baseline: {ratios}.\n\nNever-taught poses shown as a gesture, without -> with "
            f"the gate: {poses}.\n\nThe {transfer}.\n",
        )


if __name__ == "__main__":
    main()
