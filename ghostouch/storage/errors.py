"""Exceptions raised by the object stores."""

from __future__ import annotations


class StorageError(Exception):
    """A storage operation failed for good (retries, if any, are exhausted).

    The message is meant for a human: it names the operation, the key and the reason.
    """


class ObjectNotFound(StorageError):
    """The requested object does not exist."""


class TransientError(Exception):
    """A failure worth retrying (timeouts, 5xx answers, a checksum mismatch after upload...).

    Raised inside a single attempt only; the retry helper turns it into a `StorageError`
    once the attempts are used up. It never escapes the public `ObjectStore` methods.
    """
