"""Retry with exponential backoff and full jitter, for :class:`TransientStoreError` only.

No retry library ships in the environment (tenacity is not installed) and this is all we need:
one policy, applied at the boundary between the store's operations and its backends. Backends
classify errors; only the transient ones come back here."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from deltaroll.store.errors import TransientStoreError

T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; sleeps grow from ``initial_s`` by ``multiplier``, up to
    ``max_s``."""

    attempts: int = 5
    initial_s: float = 0.2
    multiplier: float = 2.0
    max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)


DEFAULT_POLICY = RetryPolicy()


def call_with_retry(
    operation: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``; on :class:`TransientStoreError` sleep and try again, up to the policy."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except TransientStoreError as exc:
            if attempt == policy.attempts:
                raise TransientStoreError(
                    f"{exc} (gave up after {policy.attempts} attempts; check the endpoint and "
                    "network, then run the command again: verified objects are not re-downloaded)"
                ) from exc
            delay = policy.delay(attempt)
            log.warning("store.retry", what=what, attempt=attempt, delay_s=round(delay, 3))
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
