"""How well the familiarity gate's pose description can tell held-out frames of a trained 2-D
gesture from frames of a never-trained one, without training any model.

For the accuracy benchmark's scenarios (`bench.datasets.scenarios_for`), each trained gesture
gets a gate of its own (`gate.build` on the frames the engine would train on, radius 1, so
distances are in spreads); held-out frames are measured against their own gesture's gate,
never-trained frames against the nearest of all. Printed: the share of held-out frames a single
distance threshold lets through when it lets through 5 % and 10 % of never-trained frames, an
upper bound for the gate's recall at that false-accept rate. It takes about a minute per
dataset, and shows in advance whether a change of the embedding or of the augmentation can help.

    .venv/bin/python -m bench.gate_separability
    .venv/bin/python -m bench.gate_separability --embedding other.npz --augment '{"knuckle_deg": 30}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.datasets import load_keypoints, scenarios_for
from ghostouch.engine import gate as gating
from ghostouch.engine import pose_embedding
from ghostouch.engine.augment import AugmentConfig
from ghostouch.engine.features import features
from ghostouch.engine.trainer import EngineConfig, holdout_split, trim_strays

Distances = npt.NDArray[np.float32]


def distances(dataset: str, reps: int, augmentation: AugmentConfig) -> tuple[Distances, Distances]:
    """(held-out frames' distances to their own gesture, never-trained frames' distances to the
    nearest gesture), in spreads."""
    engine = EngineConfig()
    own, unknown = [], []
    for sc in scenarios_for(load_keypoints(dataset), reps, 0):
        rng = np.random.default_rng(0)
        gates = {}
        for name in sc.base + sc.new:
            recording = holdout_split(sc.frames(name, sc.train[name]), engine.holdout_fraction)[0]
            gates[name] = gating.build([trim_strays(recording, engine.stray_factor)], rng, 1.0, augmentation)
        for name, gate in gates.items():
            own.append(gating.distance(gate, features(sc.frames(name, sc.test[name]), gating.KINDS)))
        never = features(sc.frames(sc.unknown[0], sc.test[sc.unknown[0]]), gating.KINDS)
        unknown.append(np.min([gating.distance(gate, never) for gate in gates.values()], axis=0))
    return np.concatenate(own), np.concatenate(unknown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--datasets", nargs="*", default=["kinivi-4class", "tradulibras-libras"])
    parser.add_argument("--embedding", type=Path, help="another pose_embedding.npz")
    parser.add_argument("--augment", help="JSON overrides of AugmentConfig")
    args = parser.parse_args()
    if args.embedding:
        pose_embedding.use(args.embedding)
    augmentation = dataclasses.replace(AugmentConfig(), **json.loads(args.augment or "{}"))
    for dataset in args.datasets:
        own, unknown = distances(dataset, args.reps, augmentation)
        bounds = [float(np.mean(own < np.quantile(unknown, fa))) for fa in (0.05, 0.10)]
        print(f"{dataset}: held-out frames let through at 5 % / 10 % never-trained: "
              f"{100 * bounds[0]:.1f} % / {100 * bounds[1]:.1f} %", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
