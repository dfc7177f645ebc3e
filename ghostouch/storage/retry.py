"""Retrying transient failures with exponential backoff."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ghostouch.storage.errors import StorageError, TransientError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try and how long to wait between tries.

    The wait before retry ``n`` (1-based) is ``base_delay * multiplier ** (n - 1)``, capped at
    ``max_delay`` and spread by +/- ``jitter`` (a fraction of the delay). No retry starts once
    ``deadline`` seconds have passed since the first attempt (or would have, after the wait): a
    store that hangs costs a request or a job about that long, not ``attempts`` full timeouts.
    """

    attempts: int = 4
    base_delay: float = 0.2
    multiplier: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.1
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("retry multiplier must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("retry jitter must be in [0, 1)")
        if self.deadline <= 0:
            raise ValueError("retry deadline must be positive")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 = first retry)."""
        raw = min(self.base_delay * self.multiplier ** (retry_number - 1), self.max_delay)
        if self.jitter:
            raw *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return raw


def is_transient(exc: BaseException) -> bool:
    """Default classification: `TransientError`, connection problems and timeouts."""
    return isinstance(exc, TransientError | ConnectionError | TimeoutError)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy | None = None,
    classify: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `fn` until it succeeds, retrying the failures that `classify` calls transient.

    Non-transient exceptions propagate unchanged at once (a `StorageError` such as
    `ObjectNotFound` is never retried). When every attempt failed transiently, or the policy's
    deadline leaves no time for another, raises `StorageError` naming `what`, the number of
    attempts and the last reason.
    """
    policy = policy or RetryPolicy()
    start = clock()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            if not classify(exc):
                raise
            wait = policy.delay(attempt)
            if attempt == policy.attempts or clock() - start + wait > policy.deadline:
                raise StorageError(
                    f"{what} failed after {attempt} attempt{'s' if attempt != 1 else ''}: {describe(exc)}"
                ) from exc
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.2f s",
                what,
                attempt,
                policy.attempts,
                describe(exc),
                wait,
            )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
