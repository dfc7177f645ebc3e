"""The retry helper, with injected flaky callables."""

from __future__ import annotations

import pytest

from ghostouch.storage import ObjectNotFound, RetryPolicy, StorageError, TransientError
from ghostouch.storage.retry import call_with_retry


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def run(
    fn: Flaky,
    sleeps: list[float],
    *,
    attempts: int = 4,
    base_delay: float = 0.2,
    max_delay: float = 10.0,
) -> str:
    policy = RetryPolicy(attempts=attempts, base_delay=base_delay, max_delay=max_delay, jitter=0)
    return call_with_retry(fn, what="uploading x", policy=policy, sleep=sleeps.append)


def test_transient_failures_then_success() -> None:
    sleeps: list[float] = []
    flaky = Flaky(2, TransientError("HTTP 503 backend unavailable"))
    assert run(flaky, sleeps) == "done"
    assert flaky.calls == 3
    assert sleeps == pytest.approx([0.2, 0.4])


@pytest.mark.parametrize("error", [ConnectionResetError("reset"), TimeoutError("timed out")])
def test_connection_errors_are_transient(error: Exception) -> None:
    sleeps: list[float] = []
    flaky = Flaky(2, error)
    assert run(flaky, sleeps) == "done"


def test_always_failing_gives_storage_error() -> None:
    sleeps: list[float] = []
    flaky = Flaky(100, TransientError("HTTP 503 backend unavailable"))
    with pytest.raises(StorageError) as info:
        run(flaky, sleeps, attempts=4, base_delay=0.2)
    message = str(info.value)
    assert "uploading x" in message
    assert "4 attempts" in message
    assert "HTTP 503 backend unavailable" in message
    assert isinstance(info.value.__cause__, TransientError)
    assert flaky.calls == 4
    assert sleeps == pytest.approx([0.2, 0.4, 0.8])


def test_backoff_is_capped_and_jittered() -> None:
    sleeps: list[float] = []
    with pytest.raises(StorageError, match="6 attempts"):
        run(Flaky(100, TransientError("x")), sleeps, attempts=6, base_delay=1, max_delay=3)
    assert sleeps == pytest.approx([1, 2, 3, 3, 3])
    policy = RetryPolicy(base_delay=1, jitter=0.1)
    assert all(0.9 <= policy.delay(1) <= 1.1 for _ in range(50))


def test_single_attempt() -> None:
    sleeps: list[float] = []
    with pytest.raises(StorageError, match="after 1 attempt: "):
        run(Flaky(1, TransientError("nope")), sleeps, attempts=1)
    assert sleeps == []


def test_permanent_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    for error in (ObjectNotFound("gone"), StorageError("forbidden"), KeyError("bug")):
        flaky = Flaky(1, error)
        with pytest.raises(type(error)):
            run(flaky, sleeps)
        assert flaky.calls == 1
    assert sleeps == []


def test_custom_classifier() -> None:
    sleeps: list[float] = []
    flaky = Flaky(2, KeyError("retry me"))
    result = call_with_retry(
        flaky,
        what="x",
        policy=RetryPolicy(jitter=0),
        classify=lambda exc: isinstance(exc, KeyError),
        sleep=sleeps.append,
    )
    assert result == "done" and flaky.calls == 3


def test_invalid_policy() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


def test_no_retry_starts_after_the_deadline() -> None:
    """Each call hangs 20 s (a store that stopped answering): 10 attempts would take minutes;
    the deadline stops after the attempt that ends past it."""
    now = [0.0]

    def hanging() -> str:
        now[0] += 20.0
        raise TimeoutError("read timed out")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(attempts=10, base_delay=1.0, jitter=0, deadline=30.0)
    with pytest.raises(StorageError, match="after 2 attempts"):
        call_with_retry(hanging, what="uploading x", policy=policy, sleep=sleep, clock=lambda: now[0])
    assert now[0] == pytest.approx(41.0)  # 20 + 1 + 20: no third attempt
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)
