"""When each ModelDeployment next needs a look without an event: one heap and one thread.

The rollout planner says when it must look again (:attr:`~.planner.Plan.wake_at`: a pause's
end, an analysis measurement falling due, a progress deadline); a reconcile files that answer
here, replacing the one before, and at that time the thread hands the ModelDeployment to a small
pool that reconciles it. At rest nothing is filed, so nothing runs. Kopf's own timers cannot do
this: Kopf puts a finalizer on every object a timer or daemon watches, and a ModelDeployment
must stay deletable while the operator is down.

Each firing runs in the context of the call that filed it (a copy, taken then): a reconcile in
one of Kopf's handlers, whose context variables (Kopf's settings, the queue its Events are
posted through) a woken reconcile needs as much.

A reconcile that fails is filed again after a backoff (1 s, 5 s, 15 s, then every 60 s, as the
operator's Kopf settings back off), until one succeeds.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Final

import structlog

BACKOFF_S: Final = (1.0, 5.0, 15.0, 60.0)
WORKERS: Final = 4

log = structlog.get_logger("deltaroll.controllers.wakeups")


class Wakeups:
    """Keys (one per ModelDeployment) and the moment each is due; ``fire(key)`` when it is."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._workers = workers
        self._condition = threading.Condition()
        self._due: dict[Hashable, float] = {}  # key -> epoch seconds; the heap may hold stale
        self._contexts: dict[Hashable, contextvars.Context] = {}  # key -> its filer's context
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._fire: Callable[[Hashable], None] | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = False

    def start(self, fire: Callable[[Hashable], None]) -> None:
        """Run ``fire(key)`` on a pool thread whenever a key falls due, until :meth:`stop`."""
        with self._condition:
            if self._thread is not None:
                raise RuntimeError("the wakeups already run")
            self._fire, self._stopping = fire, False
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="deltaroll-wakeup")
            self._thread = threading.Thread(target=self._run, name="deltaroll-wakeups", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop waking; reconciles already handed out finish."""
        with self._condition:
            thread, pool = self._thread, self._pool
            self._stopping = True
            self._condition.notify()
        if thread is not None:
            thread.join()
        if pool is not None:
            pool.shutdown(wait=True)
        with self._condition:
            self._thread = self._pool = self._fire = None

    def at(self, key: Hashable, when: datetime | None) -> None:
        """Wake ``key`` at ``when`` (a past time: now), instead of any earlier answer; None: never.
        Also the sign of a successful reconcile: the backoff of ``key`` starts over."""
        self._failures.pop(key, None)
        if when is None:
            with self._condition:
                self._due.pop(key, None)
                self._contexts.pop(key, None)
            return
        self._file(key, when.timestamp())

    def retry(self, key: Hashable) -> float:
        """File ``key`` again after its next backoff delay (its reconcile failed); the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
        self._file(key, time.time() + delay)
        return delay

    def pending(self) -> dict[Hashable, float]:
        """Key -> seconds until it is due (negative: overdue), for logs and tests."""
        now = time.time()
        with self._condition:
            return {key: due - now for key, due in self._due.items()}

    def _file(self, key: Hashable, due: float) -> None:
        context = contextvars.copy_context()
        with self._condition:
            self._contexts[key] = context
            if self._due.get(key) == due:
                return  # filed already: many events in a long pause add nothing to the heap
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._order), key))
            if self._heap[0][2] == key:  # the earliest changed: the thread sleeps less
                self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._stopping:
                now = time.time()
                while self._heap and self._heap[0][0] <= now:
                    due, _, key = heapq.heappop(self._heap)
                    if self._due.get(key) == due:  # else replaced since, or cancelled
                        del self._due[key]
                        context = self._contexts.pop(key)
                        assert self._pool is not None and self._fire is not None
                        self._pool.submit(context.run, self._call, self._fire, key)
                timeout = self._heap[0][0] - now if self._heap else None
                self._condition.wait(timeout)

    @staticmethod
    def _call(fire: Callable[[Hashable], None], key: Hashable) -> None:
        try:
            fire(key)
        except Exception:  # fire() handles its own errors; this keeps the pool alive regardless
            log.exception("wakeups.fire_failed", key=str(key))
