"""The retry policy: transient errors are retried with growing, bounded sleeps; others are not."""

from __future__ import annotations

import pytest

from deltaroll.store import StoreAccessError, TransientStoreError
from deltaroll.store.retry import RetryPolicy, call_with_retry


def test_transient_errors_are_retried_until_success() -> None:
    failures = [TransientStoreError("s3://b: k: timeout")] * 2
    sleeps: list[float] = []

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    policy = RetryPolicy(attempts=5, initial_s=1.0, multiplier=2.0, max_s=3.0)
    assert call_with_retry(flaky, what="k", policy=policy, sleep=sleeps.append) == "ok"
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0


def test_giving_up_says_so_and_what_to_do() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise TransientStoreError("s3://b: k: connection refused")

    with pytest.raises(TransientStoreError, match="gave up after 3 attempts") as caught:
        call_with_retry(down, what="k", policy=RetryPolicy(attempts=3), sleep=lambda _: None)
    assert len(calls) == 3
    assert "run the command again" in str(caught.value)


def test_permanent_errors_are_not_retried() -> None:
    calls = []

    def refused() -> None:
        calls.append(1)
        raise StoreAccessError("s3://b: access denied")

    with pytest.raises(StoreAccessError):
        call_with_retry(refused, what="k", sleep=lambda _: None)
    assert len(calls) == 1


def test_delays_never_exceed_the_cap() -> None:
    policy = RetryPolicy(attempts=10, initial_s=0.5, multiplier=3.0, max_s=2.0)
    assert all(0 <= policy.delay(n) <= 2.0 for n in range(1, 10) for _ in range(20))
