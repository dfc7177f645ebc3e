"""What a job reads of the stored training frames (sample sets), each set fetched once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ghostouch.registry import repo
from ghostouch.storage import ObjectStore


class SampleSets:
    """A job's reads of stored sample sets: each set is fetched once, however many steps read it
    (the duplicate check, the check of added frames and the training data overlap)."""

    def __init__(self, db_url: str, store: ObjectStore) -> None:
        self._db_url = db_url
        self._store = store
        self._read: dict[str, np.ndarray] = {}

    def frames(self, refs: list[str]) -> np.ndarray:
        """The sets' frames, concatenated in order (`repo.MissingSamples`, `ObjectNotFound`)."""
        for ref in refs:
            if ref not in self._read:
                self._read[ref] = repo.load_sample_sets(self._db_url, self._store, [ref])
        if not refs:
            return np.empty((0, 64), np.float32)
        return np.concatenate([self._read[ref] for ref in refs])

    def newest(self, refs: list[str], cap: int) -> np.ndarray:
        """A gesture's newest `cap` frames (only the sample sets they are in are read)."""
        blocks: list[np.ndarray] = []
        total = 0
        for ref in reversed(refs):
            blocks.insert(0, self.frames([ref]))
            total += len(blocks[0])
            if total >= cap:
                break
        return np.concatenate(blocks)[-cap:]


class StoredFrames(Mapping[str, np.ndarray]):
    """Every stored frame of each of the parent's gestures, loaded when read. The duplicate check
    compares with all of them, not only the newest ones the child trains on: a base imported from
    long recordings covers more than its last frames show. It reads one gesture's."""

    def __init__(self, samples: SampleSets, gestures: list[repo.GestureInfo]) -> None:
        self._samples = samples
        self._refs = {g.name: list(g.sample_refs) for g in gestures}

    def __getitem__(self, name: str) -> np.ndarray:
        return self._samples.frames(self._refs[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)
