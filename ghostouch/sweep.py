"""`ghostouch storage sweep`: what the store holds that nothing refers to any more.

* Model files no registered version refers to (`LeftoverSweep`): left by a publish that was
  killed or whose clean-up failed, or by a base replaced with `base import`.
* Sample sets (users' recorded frames) no model version refers to, nor a job that is unfinished
  or finished within `keep_days` (`UnusedSampleSweep`): frames of requests that ended
  `DUPLICATE` or `FAILURE`, or that the worker stored again without the frames a gesture
  already held. A retryable failure sent again within those days still finds its frames.

Either deletes a key only when two runs (`ghostouch storage sweep` waits between them) both found
it unreferenced and it is older than `min_age_s`: a job still publishing (a slow store retries for
minutes) writes model files no version refers to yet, and the API stores a request's frames just
before it records its job; no job runs longer than its time limit
(`Settings.leftover_min_age_seconds`). Ages are measured by the store's clock (a probe object's
time), which stamped the files, so a sweeping machine whose clock runs ahead does not shorten
them; how long a job's frames are kept counts by the registry's clock, like the jobs' times. The
listing comes before the registry read, so what is registered in between counts as referenced. It
runs only when an operator asks: the registry must be the only one writing to the store, or it
would take another deployment's files for leftovers.
"""

from __future__ import annotations

import logging
import re

from ghostouch.publishing import ARTIFACT_KEY
from ghostouch.registry import job_records, repo
from ghostouch.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

SWEEP_REFUSE_OVER = 10  # unreferenced keys: more than this, and more than half the store's, need --force
SAMPLE_KEY = re.compile(r"samples/([0-9a-f]{64})\.npy")  # what `repo.store_sample_set` writes


class SweepRefused(Exception):
    """The sweep would delete what looks like another registry's files; nothing was deleted."""


class _Sweep:
    what = "files"  # in messages: "model files", "sample sets"

    def __init__(self, min_age_s: float, force: bool = False) -> None:
        self._suspects: set[str] = set()
        self.min_age_s = min_age_s
        self.force = force  # delete even what looks like a registry that is not this store's

    def run(self, db_url: str, store: ObjectStore) -> list[str]:
        """One run: the keys deleted (those found unreferenced by the previous run too)."""
        return self.delete(db_url, store, self.plan(db_url, store))

    def plan(self, db_url: str, store: ObjectStore) -> list[str]:
        """The keys this run would delete; SweepRefused when they look like another registry's."""
        stored = self._stored(store)
        in_use = self._in_use(db_url)
        unreferenced = stored - in_use
        seen_twice = sorted(unreferenced & self._suspects)
        # Ages by the store's clock, which stamped the files, not by this machine's (one whose clock
        # ran ahead would take a publishing job's files for old enough).
        now = store.store_time() if seen_twice and self.min_age_s > 0 else None
        doomed = [key for key in seen_twice if self._old_enough(store, key, now)]
        if doomed and not self.force:
            self._refuse_a_foreign_registry(len(doomed), len(stored), bool(in_use & stored))
        self._suspects = unreferenced - set(doomed)
        return doomed

    def delete(self, db_url: str, store: ObjectStore, doomed: list[str]) -> list[str]:
        for key in doomed:
            self._delete(db_url, store, key)
        if doomed:
            log.info("deleted %d %s nothing refers to", len(doomed), self.what)
        return doomed

    def _stored(self, store: ObjectStore) -> set[str]:
        raise NotImplementedError

    def _in_use(self, db_url: str) -> set[str]:
        raise NotImplementedError

    def _delete(self, db_url: str, store: ObjectStore, key: str) -> None:
        store.delete(key)

    def _old_enough(self, store: ObjectStore, key: str, now: float | None) -> bool:
        try:
            return store.age_seconds(key, now) >= self.min_age_s
        except ObjectNotFound:  # deleted since the listing (a failed publish cleaned up)
            return False

    def _refuse_a_foreign_registry(self, n_doomed: int, n_stored: int, any_stored_in_use: bool) -> None:
        """A registry that refers to none of the store's files, or to few of many, is most likely
        not this store's (an unset GHOSTOUCH_DATABASE_URL gives a new, empty one)."""
        if not any_stored_in_use:
            raise SweepRefused(
                f"the registry refers to none of the store's {self.what}; check that GHOSTOUCH_DATABASE_URL and "
                "GHOSTOUCH_DATA_DIR name this store's registry (or use --force)"
            )
        if n_doomed > SWEEP_REFUSE_OVER and n_doomed > n_stored / 2:
            raise SweepRefused(
                f"{n_doomed} of the {n_stored} {self.what} are referenced by nothing, which is what a "
                "registry of another deployment looks like; check the settings (or use --force)"
            )


class LeftoverSweep(_Sweep):
    """Model files no registered version refers to."""

    what = "model files"

    def _stored(self, store: ObjectStore) -> set[str]:
        return {key for key in store.list_keys("models/") if ARTIFACT_KEY.fullmatch(key)}

    def _in_use(self, db_url: str) -> set[str]:
        return repo.artifact_keys_in_use(db_url)


class UnusedSampleSweep(_Sweep):
    """Sample sets no model version refers to, nor a job unfinished or finished within `keep_days`."""

    what = "sample sets"

    def __init__(self, min_age_s: float, keep_days: float, force: bool = False) -> None:
        super().__init__(min_age_s, force)
        self.keep_days = keep_days

    def _stored(self, store: ObjectStore) -> set[str]:
        return {key for key in store.list_keys("samples/") if SAMPLE_KEY.fullmatch(key)}

    def _in_use(self, db_url: str) -> set[str]:
        kept_for_s = self.keep_days * 86400.0  # by the registry's clock, as the jobs' times are
        refs = repo.sample_refs_of_versions(db_url) | job_records.sample_refs_of_jobs(db_url, kept_for_s)
        return {f"samples/{ref}.npy" for ref in refs}

    def _refuse_a_foreign_registry(self, n_doomed: int, n_stored: int, any_stored_in_use: bool) -> None:
        """Not here: requests refused in numbers (a flood of duplicates) leave more unused frames than
        used ones. A registry that is not this store's is refused by the model files' sweep, which
        `ghostouch storage sweep` plans first, before either deletes anything."""

    def _delete(self, db_url: str, store: ObjectStore, key: str) -> None:
        # The row first: a row left without its object (a delete that failed) would make every
        # request with these same frames skip storing them, and its job find none.
        repo.forget_sample_set(db_url, SAMPLE_KEY.fullmatch(key).group(1))  # type: ignore[union-attr]
        store.delete(key)
