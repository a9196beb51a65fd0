"""Waking whoever waits for an object the moment this process commits it to a cache.

A peer asking an agent for an object the agent is still fetching waits for it instead of asking
again and again (every poll a connection, a token check and a 404, from every pod of the fleet,
on the CPUs the fetch itself needs). Each commit bumps one process-wide count and wakes the
waiters, who look again; a commit by another process sharing the directory wakes nobody, so a
waiter also looks again every ``recheck_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

#: How often a waiter looks again without a wake-up (commits by other processes).
RECHECK_S: Final = 1.0


class Arrivals:
    """A count of the commits of this process, and a way to sleep until the next one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._commits = 0

    def landed(self) -> None:
        """An object entered a cache: wake every waiter."""
        with self._changed:
            self._commits += 1
            self._changed.notify_all()

    def wait_for(
        self, look: Callable[[], T | None], wait_s: float, recheck_s: float = RECHECK_S
    ) -> T | None:
        """``look()`` until it returns something or ``wait_s`` has passed (at least once); it
        runs again after each commit and every ``recheck_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            seen = self._count()
            found = look()
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            self._sleep_past(seen, min(remaining, recheck_s))

    def _count(self) -> int:
        with self._changed:
            return self._commits

    def _sleep_past(self, seen: int, timeout: float) -> None:
        """Until a commit after the ``seen``-th, or ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: self._commits != seen, timeout=timeout)


ARRIVALS = Arrivals()
