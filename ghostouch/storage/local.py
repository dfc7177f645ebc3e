"""Objects as files under ``data_dir/objects``, served by the API at ``/files/{key}``."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ghostouch.storage.base import ObjectStore, signed_links
from ghostouch.storage.errors import ObjectNotFound, StorageError, TransientError
from ghostouch.storage.keys import is_valid_key, validate_key
from ghostouch.storage.retry import RetryPolicy
from ghostouch.storage.settings import StorageSettings

# Temporary files carry a '~', which no valid key segment can contain, so they never show
# up in listings and can never collide with an object.
_TMP_SUFFIX = "~tmp"
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.EIO, errno.ETIMEDOUT, errno.ESTALE})


def _os_failure(exc: OSError, what: str) -> Exception:
    """Map an OS error to TransientError (worth retrying) or StorageError (permanent)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientError(f"{what}: {reason}")
    return StorageError(f"{what}: {reason}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    """Files under `root`; writes are atomic (temp file in the same folder, fsync, replace)."""

    def __init__(
        self,
        root: Path,
        *,
        public_url: str,
        signing_secret: bytes | None = b"",
        link_ttl_seconds: int = 3600,
        public_links: bool = False,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(retry_policy=retry_policy, sleep=sleep)
        if not public_url.startswith(("http://", "https://")):  # public links are built on it too
            raise StorageError(f"public_url must be an absolute http(s) URL, got {public_url!r}")
        self._root = Path(root)
        self._public_url = public_url.rstrip("/")
        self._public_links = public_links
        if not public_links and signing_secret is not None:  # None: a worker's store, which links nothing
            self._links = signed_links(public_url, signing_secret, link_ttl_seconds, clock)

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> LocalObjectStore:
        return cls(
            Path(settings.data_dir) / "objects",
            public_url=settings.public_url,
            signing_secret=settings.signing_secret,
            link_ttl_seconds=settings.link_ttl_seconds,
            public_links=settings.public_links,
            retry_policy=settings.retry_policy(),
        )

    @property
    def root(self) -> Path:
        return self._root

    @property
    def public_links(self) -> bool:
        return self._public_links

    @property
    def description(self) -> str:
        return f"local storage at {self._root}"

    # ------------------------------------------------------------- extra local API

    def local_path(self, key: str) -> Path:
        """Path of the object's file, for streaming it; `ObjectNotFound` if absent."""
        path = self._path(validate_key(key))
        if not path.is_file():
            raise ObjectNotFound(f"object {key!r} not found in {self.description}")
        return path

    def remove_stale_temp_files(self, older_than_s: float, now: float | None = None) -> list[str]:
        """Delete the temporary files of writes that never finished (a process killed while
        writing) last touched more than `older_than_s` before `now` (default: this machine's
        clock; `store_time()` is the clock that stamped them); returns their paths, relative to
        the store. A write takes seconds, so an older one is nobody's."""
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = []
        for path in self._root.rglob(f".*{_TMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.relative_to(self._root).as_posix())
        return sorted(removed)

    def authorize_download(self, key: str, expires: str | int | None, sig: str | None) -> None:
        """With public links every request for a valid key is allowed (`/files/{key}`);
        otherwise the link must be one of this store's, unexpired."""
        if self._public_links:
            validate_key(key)
            return
        super().authorize_download(key, expires, sig)

    # ------------------------------------------------------------------ primitives

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*key.split("/"))

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        what = f"cannot write {key!r} in {self.description}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            if self._root.exists() and not self._root.is_dir():
                raise StorageError(f"{what}: {self._root} is not a folder") from exc
            raise StorageError(f"{what}: a parent of it is an object, not a folder") from exc
        except OSError as exc:
            raise _os_failure(exc, what) from exc
        if path.is_dir():
            raise StorageError(f"{what}: a folder of that name exists (it has objects below it)")
        tmp_name: str | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o644)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _os_failure(exc, what) from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def _read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found in {self.description}") from None
        except OSError as exc:
            raise _os_failure(exc, f"cannot read {key!r} from {self.description}") from exc

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _written_at(self, key: str) -> float:
        path = self._path(key)
        try:
            if path.is_file():
                return path.stat().st_mtime
        except OSError as exc:
            raise _os_failure(exc, f"cannot read the age of {key!r} in {self.description}") from exc
        raise ObjectNotFound(f"object {key!r} not found in {self.description}")

    def _delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_file():
                path.unlink(missing_ok=True)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _os_failure(exc, f"cannot delete {key!r} from {self.description}") from exc

    def _list(self, prefix: str) -> list[str]:
        # Walk only the deepest folder the prefix is certain to be under.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(folder) if folder else self._root
        if not start.is_dir():
            return []
        keys: list[str] = []

        def fail(exc: OSError) -> None:
            raise exc

        try:
            for dirpath, dirnames, filenames in os.walk(start, onerror=fail):
                rel_dir = Path(dirpath).relative_to(self._root).as_posix()
                base = "" if rel_dir == "." else rel_dir + "/"
                dirnames[:] = [d for d in dirnames if is_valid_key(d)]
                for name in filenames:
                    key = base + name
                    if key.startswith(prefix) and is_valid_key(key):
                        keys.append(key)
        except FileNotFoundError:
            return keys
        except OSError as exc:
            raise _os_failure(exc, f"cannot list {prefix!r} in {self.description}") from exc
        return keys

    def _url(self, key: str) -> str:
        if self._public_links:
            return f"{self._public_url}/files/{key}"
        return self.signed_url(key)
