"""Incremental-personalization accuracy of the engine vs the seed-style baseline, on real data.

Protocol (per dataset, repeated with different class roles): a base model is trained on some
classes; each new class is then added from ONE window of 100 consecutive frames, exactly as the
worker does it (duplicate check with the parent's exported uint8 model, then
`train_gesture_model` on the parent's gestures plus the new one). Evaluation runs the final
uint8 TFLite model through LiteRT with the apps' quantization, on frames at least 100 frames
away from every training window. One class per repetition is never trained ("unknown").

    .venv/bin/python -m bench.accuracy               # full run (~minutes)
    .venv/bin/python -m bench.accuracy --quick       # fewer repetitions, no baseline
    .venv/bin/python -m bench.accuracy --speed       # warm train+export+verify timing
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.datasets import Scenario, load_all, scenarios_for
from ghostouch.engine.duplicates import check_duplicate
from ghostouch.engine.frames import app_view
from ghostouch.engine.model import predict_proba
from ghostouch.engine.trainer import EngineConfig, GestureFrames, ParentModel, train_gesture_model
from ghostouch.engine.verify import LiteModel, decisions

Index = npt.NDArray[np.int64]
Frames = npt.NDArray[np.float32]


@dataclass
class Tally:
    new: list[float] = field(default_factory=list)
    old: list[float] = field(default_factory=list)
    false_accept: list[float] = field(default_factory=list)
    dup_tp: list[bool] = field(default_factory=list)
    dup_fp: list[bool] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    agreement_known: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        def mean(v: list) -> float:
            return float(np.mean(v)) if v else float("nan")

        return {
            "new_recall": mean(self.new), "old_accuracy": mean(self.old),
            "false_accept": mean(self.false_accept), "dup_tp": mean(self.dup_tp),
            "dup_fp": mean(self.dup_fp), "agreement": mean(self.agreement),
            "agreement_known": mean(self.agreement_known),
            "s_per_increment": float(np.median(self.seconds)) if self.seconds else float("nan"),
            "n_dup_tp": len(self.dup_tp), "n_dup_fp": len(self.dup_fp),
        }  # fmt: skip


VERBOSE = False
FAILED_CHECKS: list[float] = []  # uint8 agreement of models the engine would have rejected


def _where(proba: Frames, labels: list[str]) -> str:
    top = np.where(proba.max(axis=1) >= 0.5, proba.argmax(axis=1), len(labels))
    counts = np.bincount(top, minlength=len(labels) + 1) / len(top)
    return " ".join(f"{n}={c:.2f}" for n, c in zip([*labels, "none"], counts, strict=True) if c)


def decision_agreement(lite: Frames, reference: Frames, shown_only: bool = False) -> float:
    """Share of frames where both models show the same thing: a gesture (top prob >= 0.5), or
    "no gesture". With `shown_only`, among the frames where the reference shows a gesture."""
    same = decisions(lite) == decisions(reference)
    if shown_only:
        shown = decisions(reference) >= 0
        return float(np.mean(same[shown])) if np.any(shown) else float("nan")
    return float(np.mean(same))


def recognized(proba: Frames, label: int) -> float:
    return float(np.mean((proba.argmax(axis=1) == label) & (proba.max(axis=1) >= 0.5)))


# A system under test: train(gestures, parent) -> (model, lite, seconds), and
# dup(parent, parent's lite model, parent's gestures, new frames) -> refused as a duplicate.
Gestures = list[tuple[str, Frames]]
Trainer = Callable[[Gestures, object | None], tuple[object, LiteModel, float]]
DupCheck = Callable[[object, LiteModel, Gestures, Frames], bool]


def run_scenario(sc: Scenario, train: Trainer, dup: DupCheck, tally: Tally, agree: Callable) -> None:
    gestures = [(name, sc.frames(name, sc.train[name])) for name in sc.base]
    parent, lite, _ = train(gestures, None)
    for name in sc.new:
        for known, _ in gestures:  # a held-out block of a known gesture under a new name
            if len(sc.probe[known]):
                flagged = dup(parent, lite, gestures, sc.frames(known, sc.probe[known]))
                tally.dup_tp.append(flagged)
                if VERBOSE and not flagged:
                    print(f"  rep {sc.rep} duplicate of {known} missed")
        new_frames = sc.frames(name, sc.train[name])
        tally.dup_fp.append(dup(parent, lite, gestures, new_frames))
        if VERBOSE and tally.dup_fp[-1]:
            print(f"  rep {sc.rep} new {name} refused as a duplicate")
        gestures = [*gestures, (name, new_frames)]
        parent, lite, seconds = train(gestures, parent)
        tally.seconds.append(seconds)
    labels = [g for g, _ in gestures]
    for i, name in enumerate(labels):
        proba = lite.predict_proba(sc.frames(name, sc.test[name]))
        (tally.new if name in sc.new else tally.old).append(recognized(proba, i))
        if VERBOSE:
            print(f"  rep {sc.rep} {'new' if name in sc.new else 'old'} {name}: {_where(proba, labels)}")
    for name in sc.unknown:
        proba = lite.predict_proba(sc.frames(name, sc.test[name]))
        tally.false_accept.append(float(np.mean(proba.max(axis=1) >= 0.5)))
        if VERBOSE:
            print(f"  rep {sc.rep} unknown {name}: {_where(proba, labels)}")
        tally.dup_fp.append(dup(parent, lite, gestures, sc.frames(name, sc.probe[name])))
        if VERBOSE and tally.dup_fp[-1]:
            print(f"  rep {sc.rep} unknown {name} refused as a duplicate")
    known = np.concatenate([sc.frames(n, sc.test[n]) for n in labels])
    test = np.concatenate([known, *[sc.frames(n, sc.test[n]) for n in sc.unknown]])
    tally.agreement.append(agree(parent, lite, test))
    tally.agreement_known.append(agree(parent, lite, known, shown_only=True))


def worker_duplicate_check(lite: LiteModel, gestures: Gestures, frames: Frames) -> bool:
    """The worker's decision (jobs/training.py): the engine's `check_duplicate` on the parent's
    exported model and the parent gestures' recorded frames."""
    labels = [name for name, _ in gestures]
    verdict = check_duplicate(lite, labels, frames, known=dict(gestures))
    if VERBOSE:
        ratio = "n/a" if verdict.spread_ratio is None else f"{verdict.spread_ratio:.2f}"
        print(f"    {verdict.gesture} share {verdict.similarity:.2f} spread ratio {ratio}: {verdict.is_duplicate}")
    return verdict.is_duplicate


def parse_config(text: str | None, base: EngineConfig | None = None) -> EngineConfig:
    """`base` (default: EngineConfig()) with JSON overrides, e.g.
    '{"samples_per_gesture": 200, "train": {"steps": 400}, "augment": {"roll_deg": 60}}'."""
    import dataclasses
    import json

    raw = json.loads(text) if text else {}
    train_cfg = raw.pop("train", {})
    augment_cfg = raw.pop("augment", {})
    if "hidden" in train_cfg:
        train_cfg["hidden"] = tuple(train_cfg["hidden"])
    base = base or EngineConfig()
    return dataclasses.replace(
        base, **raw, train=dataclasses.replace(base.train, **train_cfg),
        augment=dataclasses.replace(base.augment, **augment_cfg),
    )  # fmt: skip


def ours(cfg: EngineConfig) -> tuple[Trainer, DupCheck, Callable]:
    from ghostouch.engine import trainer

    # Measure (rather than fail on) exported models that would not pass the engine's check.
    required, trainer.MIN_AGREEMENT = trainer.MIN_AGREEMENT, 0.0

    def train(gestures: list[tuple[str, Frames]], parent: object | None) -> tuple:
        t = time.perf_counter()
        from_parent = None if parent is None else ParentModel(LiteModel.load(parent.tflite_uint8), parent.labels)  # type: ignore[attr-defined]
        model = train_gesture_model([GestureFrames(n, f) for n, f in gestures], cfg, parent=from_parent)
        seconds = time.perf_counter() - t
        if model.metrics["uint8_agreement"] < required:
            FAILED_CHECKS.append(model.metrics["uint8_agreement"])
        return model, LiteModel.load(model.tflite_uint8), seconds

    def dup(parent: object, lite: LiteModel, gestures: Gestures, frames: Frames) -> bool:
        return worker_duplicate_check(lite, gestures, frames)

    def agree(model: object, lite: LiteModel, frames: Frames, shown_only: bool = False) -> float:
        float_proba = predict_proba(model.weights, app_view(frames), model.gate)  # type: ignore[attr-defined]
        return decision_agreement(lite.predict_proba(frames), float_proba, shown_only)

    return train, dup, agree


def baseline() -> tuple[Trainer, DupCheck, Callable]:
    from bench import seed_baseline

    def train(gestures: list[tuple[str, Frames]], parent: object | None) -> tuple:
        t = time.perf_counter()
        model = seed_baseline.train(gestures, parent)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t
        return model, LiteModel.load(model.tflite_uint8), seconds

    def dup(parent: object, lite: LiteModel, gestures: Gestures, frames: Frames) -> bool:
        return seed_baseline.is_duplicate(parent, frames)  # type: ignore[arg-type]

    def agree(model: object, lite: LiteModel, frames: Frames, shown_only: bool = False) -> float:
        keras_proba = model.model.predict(app_view(frames), verbose=0)  # type: ignore[attr-defined]
        return decision_agreement(lite.predict_proba(frames), keras_proba, shown_only)

    return train, dup, agree


COLUMNS = [("new_recall", "new recall"), ("old_accuracy", "old acc"), ("false_accept", "unknown FA"),
           ("dup_tp", "dup TP"), ("dup_fp", "dup FP"), ("agreement", "u8=float"),
           ("agreement_known", "u8 shown"),
           ("s_per_increment", "s/incr")]  # fmt: skip


def table(results: dict[tuple[str, str], dict[str, float]]) -> str:
    head = "| dataset | system | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for (ds, system), row in results.items():
        cells = [f"{row[k]:.2f}" if k == "s_per_increment" else f"{100 * row[k]:.1f} %"
                 for k, _ in COLUMNS]  # fmt: skip
        lines.append(f"| {ds} | {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(results: dict[tuple[str, str], dict[str, float]]) -> str:
    lines = []
    for (ds, system), row in results.items():
        base = results.get((ds, "baseline"))
        if system != "ours" or base is None:
            continue
        parts = [f"{c}: {row[k] / base[k]:.2f}x" if base[k] else f"{c}: n/a" for k, c in COLUMNS]
        lines.append(f"- {ds} (ours / baseline): " + ", ".join(parts))
    return "\n".join(lines)


def speed(runs: int) -> str:
    from bench.datasets import load_ghostouch, load_keypoints

    g = load_ghostouch()
    kin = load_keypoints("kinivi-4class")
    sets = {
        "ghostouch p/r/s/one (100/100/100/92)": [
            GestureFrames(n, g.frames[n][:100]) for n in ("paper", "rock", "scissors", "one")],
        "kinivi 4 x 250": [GestureFrames(n, f[300:550]) for n, f in kin.frames.items()],
    }  # fmt: skip
    train_gesture_model(sets["kinivi 4 x 250"], EngineConfig())  # warm-up
    lines = []
    for label, gestures in sets.items():
        totals, parts = [], []
        for i in range(runs):
            t = time.perf_counter()
            model = train_gesture_model(gestures, EngineConfig(seed=i))
            totals.append(time.perf_counter() - t)
            parts.append(model.metrics["timings"])
        med = {k: float(np.median([p[k] for p in parts])) for k in parts[0]}
        lines.append(
            f"| {label} | {np.median(totals):.3f} s | {min(totals):.3f} s | {max(totals):.3f} s | "
            + " | ".join(f"{v:.3f} s" for v in med.values())
            + " |"
        )
        print(lines[-1], flush=True)
    head = "| 4 gestures | median | min | max | train (median) | export | verify |\n|---|---|---|---|---|---|---|"
    return "\n".join([head, *lines])


NOTES = """\
Protocol (bench/accuracy.py): a base model on about half of a dataset's classes (200 consecutive
frames each), then each new class added from ONE window of 100 consecutive frames through the
worker's path (duplicate check on the parent's exported model, then `train_gesture_model`),
evaluated with the uint8 TFLite model through LiteRT on frames at least 100 frames away from
every training window. One class per repetition is never trained (unknown). Columns: new recall
and old acc = share of test frames shown as the right gesture (top prob >= 0.5); unknown FA =
share of a never-trained gesture's frames shown as some gesture; dup TP = held-out blocks of
known gestures posted under a new name and refused (the worker's check: parent model, then hand shape);
dup FP = genuinely new gestures refused; u8=float = same decision (gesture or none) of the uint8
and float models on all test frames, u8 shown = the uint8 model shows the same gesture on the
frames of trained gestures that the float model shows as a gesture
(mean over models); s/incr = median seconds per increment (train + export + verify).
ghostouch rows are shuffled (no blocks): base = base_v1 rows, old-class test = the 59 v0-only
rows, `one` trained from its first 60 rows; its last 21 rows, exact copies of `paper` rows of
the v0 file, are dropped. kinivi / libras are 2-D keypoints fed as frames (z = 0): 2-D results;
the engine gives such models the pose embedding. Every model here has the familiarity gate
(engine/gate.py; the world models too, as their base is one person's recordings). In
the Libras file, rows 1217-1251 filed under B are N hand shapes (0.3-2 from N's frames, 5-7.5
from every other B frame): `datasets.mislabeled_runs` finds them and they are dropped (with them,
B can be recognized on at most 62 % of its test frames, whatever the model).
The issue's split of the real `one` recording (first 60 rows trained, the other 53 tested;
21 of those 53 are the `paper` copies): all 32 genuine `one` rows recognized, the 21 copies
shown as paper (so 60.4 % of the 53 is the ceiling, reached), base_v1 frames 100 %, over 3
seeds; the unseen v0 `paper` rows posted as a new gesture are refused as a duplicate of paper."""


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


SPEED_START, SPEED_END = "<!-- speed -->", "<!-- /speed -->"


def replace_section(heading: str, section: str, path: Path = RESULTS) -> None:
    """Put `section` (starting with `heading`) in place of RESULTS.md's section under `heading`,
    or append it; the other sections stay as they are."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    end = text.find("\n## ", start + 1) if start >= 0 else -1
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    path.write_text(text, encoding="utf-8")


def old_section(heading: str, path: Path = RESULTS) -> str:
    """RESULTS.md's section under `heading` ("" if none)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start = text.find(heading + "\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start:end] if end >= 0 else text[start:]


def write_results_section(body: str | None = None, speed_block: str | None = None, path: Path = RESULTS) -> None:
    """Replace (or append) the "## Accuracy" section of RESULTS.md, leaving the others alone.
    `body` replaces the accuracy results, `speed_block` the speed results; None keeps them."""
    old = old_section("## Accuracy", path)
    old_speed = ""
    if SPEED_START in old:
        old_speed = old[old.index(SPEED_START) : old.index(SPEED_END) + len(SPEED_END)]
    old_body = old.replace(old_speed, "").replace("## Accuracy\n", "").strip()
    block = f"{SPEED_START}\n{speed_block.strip()}\n{SPEED_END}" if speed_block else old_speed
    section = "## Accuracy\n\n" + "\n\n".join(p for p in (block, (body or old_body).strip()) if p) + "\n"
    replace_section("## Accuracy", section, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=4, help="repetitions per dataset")
    parser.add_argument("--quick", action="store_true", help="2 repetitions, no baseline")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--datasets", nargs="*", help="names to run (default: all)")
    parser.add_argument("--speed", type=int, nargs="?", const=15, help="timing runs only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="per-class outcomes")
    parser.add_argument("--config", help="JSON overrides of EngineConfig (experiments)")
    parser.add_argument("--write", action="store_true", help="update the Accuracy section of RESULTS.md")
    parser.add_argument("--embedding", type=Path, help="another pose_embedding.npz (experiments)")
    args = parser.parse_args()
    if args.embedding:
        from ghostouch.engine import pose_embedding

        pose_embedding.use(args.embedding)
    global VERBOSE
    VERBOSE = args.verbose
    if args.speed:
        result = speed(args.speed)
        if args.write:
            load = os.getloadavg()[0]
            write_results_section(speed_block=(
                f"Speed, {datetime.date.today().isoformat()}, `.venv/bin/python -m bench.accuracy "
                f"{' '.join(sys.argv[1:])}` ({args.speed} jobs each in one warm process, after a "
                f"warm-up job; 2 cores, load average {load:.1f} at the end):\n\n{result}"
            ))  # fmt: skip
        return
    reps = 2 if args.quick else args.reps
    systems = {"ours": ours(parse_config(args.config))}
    if not (args.quick or args.no_baseline):
        systems["baseline"] = baseline()
    results: dict[tuple[str, str], dict[str, float]] = {}
    t0 = time.perf_counter()
    for ds in load_all():
        if args.datasets and ds.name not in args.datasets:
            continue
        for note in ds.notes:
            print(f"[{ds.name}] {note}")
        scs = scenarios_for(ds, reps, args.seed)
        for system, (train, dup, agree) in systems.items():
            tally = Tally()
            for sc in scs:
                run_scenario(sc, train, dup, tally, agree)
            results[(f"{ds.name} ({ds.kind})", system)] = tally.row()
            print(f"[{ds.name}] {system}: {tally.row()}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = "\n\n".join([
        table(results),
        ratios(results),
        f"Models the engine would have rejected (uint8 agreement check): {len(FAILED_CHECKS)} "
        f"{[round(a, 4) for a in FAILED_CHECKS]}. Run time {time.perf_counter() - t0:.0f} s.",
    ])  # fmt: skip
    print("\n" + summary)
    if args.write:
        command = "`.venv/bin/python -m bench.accuracy " + " ".join(sys.argv[1:]) + "`"
        write_results_section(f"{datetime.date.today().isoformat()}, {command}\n\n{summary}\n\n{NOTES}")


if __name__ == "__main__":
    main()
