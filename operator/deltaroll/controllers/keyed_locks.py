"""One lock per object, for the reconciles of that object only.

Kopf runs an object's handlers one at a time, but our event handlers and the wake-up thread also
reconcile it; a lock per object keeps those apart without serialising different objects. A lock
is kept only while a reconcile holds or waits for it: a table of every object ever reconciled
would grow with every ModelDeployment and ModelDelta created and deleted over the operator's life.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class KeyedLocks:
    """``with locks.hold(key):`` excludes every other holder of ``key``, and no other key."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    def __len__(self) -> int:
        """How many keys are held or waited for now."""
        with self._guard:
            return len(self._locks)

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            lock = lock or threading.Lock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users = self._locks[key][1] - 1
                if users:
                    self._locks[key] = (lock, users)
                else:
                    del self._locks[key]
