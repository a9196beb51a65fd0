"""Retry with exponential backoff and full jitter, for :class:`TransientStoreError` only.

One policy, applied at the boundary between the store's operations and its backends, run by
tenacity (stop after the policy's attempts, sleep the policy's delay, retry only what the
backends classified as transient). Backends classify errors; only the transient ones come back
here."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

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

    def before_sleep(state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("store.retry", what=what, attempt=state.attempt_number, delay_s=round(delay, 3))

    def give_up(state: RetryCallState) -> NoReturn:
        exc = state.outcome.exception() if state.outcome else None
        raise TransientStoreError(
            f"{exc} (gave up after {policy.attempts} attempts; check the endpoint and "
            "network, then run the command again: verified objects are not re-downloaded)"
        ) from exc

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=lambda state: policy.delay(state.attempt_number),
        retry=retry_if_exception_type(TransientStoreError),
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
    return retrying(operation)
