"""A token bucket shared by threads: bytes per second, with a burst of one second's worth.

The agent's peer server sends through one, so however many peers it serves at once, serving
never takes more of the pod's network than the operator allowed it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` bytes per second for all callers together; 0 means unlimited."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(rate)
        self._last = clock()

    def take(self, count: int) -> None:
        """Block until ``count`` bytes may be sent (a debt is allowed, so a block larger than the
        burst waits for its whole size once instead of never passing)."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.rate), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
