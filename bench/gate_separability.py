"""How well the familiarity gate's pose description can tell held-out frames of a trained 2-D
gesture from frames of a never-trained one, without training any model.

For the accuracy benchmark's scenarios (`bench.datasets.scenarios_for`), each trained gesture's
recording is described as the gate describes it (`gate.describe`), with its spread from the
engine's augmented copies; held-out frames are measured against their own gesture's recording,
never-trained frames against the nearest of all. Printed: the share of held-out frames a single
distance threshold lets through when it lets through 5 % and 10 % of never-trained frames, an
upper bound for the gate's recall at that false-accept rate. It takes about a minute per
dataset, and shows in advance whether a change of the embedding or of the augmentation can help.

    .venv/bin/python -m bench.gate_separability
    .venv/bin/python -m bench.gate_separability --embedding other.npz --augment '{"knuckle_deg": 0}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from bench.datasets import load_keypoints, scenarios_for
from ghostouch.engine import gate as gating
from ghostouch.engine import negatives, pose_embedding
from ghostouch.engine.augment import AugmentConfig, augment, flatten_depth
from ghostouch.engine.features import features
from ghostouch.engine.trainer import EngineConfig, _split, trim_strays

Frames = np.ndarray


def describe(frames: Frames) -> Frames:
    return gating.describe(features(frames, gating.KINDS))


def distances(dataset: str, reps: int, cfg: AugmentConfig) -> tuple[Frames, Frames]:
    """(held-out frames' distances to their own gesture, never-trained frames' distances to the
    nearest gesture), in spreads."""
    engine = EngineConfig()
    own, unknown = [], []
    for sc in scenarios_for(load_keypoints(dataset), reps, 0):
        rng = np.random.default_rng(0)
        recordings = []
        for name in sc.base + sc.new:
            recording = _split(sc.frames(name, sc.train[name]), engine.holdout_fraction)[0]
            frames = trim_strays(recording, engine.stray_factor)
            keep = frames[rng.permutation(len(frames))[: gating.MAX_PROTOTYPES]]
            reference = describe(keep)
            copies = describe(flatten_depth(augment(keep, negatives.SPREAD_COPIES, rng, cfg)))
            spread = float(np.percentile(negatives.nearest_distance(copies, reference), 90))
            recordings.append((name, reference, spread))
        for name, reference, spread in recordings:
            own.append(negatives.nearest_distance(describe(sc.frames(name, sc.test[name])), reference) / spread)
        never = describe(sc.frames(sc.unknown[0], sc.test[sc.unknown[0]]))
        unknown.append(np.min([negatives.nearest_distance(never, r) / s for _, r, s in recordings], axis=0))
    return np.concatenate(own), np.concatenate(unknown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--datasets", nargs="*", default=["kinivi-4class", "tradulibras-libras"])
    parser.add_argument("--embedding", type=Path, help="another pose_embedding.npz")
    parser.add_argument("--augment", help="JSON overrides of AugmentConfig")
    args = parser.parse_args()
    if args.embedding:
        arrays = pose_embedding.load(args.embedding)
        pose_embedding.load = lambda path=None: arrays  # type: ignore[assignment,misc]
    cfg = dataclasses.replace(AugmentConfig(), **json.loads(args.augment or "{}"))
    for dataset in args.datasets:
        own, unknown = distances(dataset, args.reps, cfg)
        bounds = [float(np.mean(own < np.quantile(unknown, fa))) for fa in (0.05, 0.10)]
        print(f"{dataset}: held-out frames let through at 5 % / 10 % never-trained: "
              f"{100 * bounds[0]:.1f} % / {100 * bounds[1]:.1f} %", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
