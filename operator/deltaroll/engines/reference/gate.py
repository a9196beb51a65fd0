"""The gate every inference request passes, which an in-memory weight change closes.

A patch writes into the tensors requests compute with, so no request may run while it writes:
closing the gate holds new requests at the door, waits until the requests in flight have
finished (the drain), and the change runs with the engine idle; reopening admits the held
requests, which then see only the new weights. The pause is what the change costs requests: from
the later of the first request held and the end of the drain, to the moment the held requests are
admitted again. The drain is reported on its own: it lasts as long as the longest request in
flight (longer on a larger model, whatever changed), and the engine is busy serving meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class DrainTimeoutError(Exception):
    """Requests in flight did not finish in time; the gate reopened, nothing was changed."""


@dataclass
class HoldTiming:
    """What one closing of the gate cost (seconds; ``pause_s`` is 0 when no request waited;
    ``held_s`` is the longest any held request could have waited: drain and change)."""

    drain_s: float = 0.0
    held_s: float = 0.0
    pause_s: float = 0.0
    held_requests: int = 0


class RequestGate:
    """Admits requests unless closed; :meth:`closed` waits for the ones in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._first_held: float | None = None
        self._held = 0

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Run one request: waits while the gate is closed."""
        with self._cond:
            if self._closed:
                if self._first_held is None:
                    self._first_held = time.perf_counter()
                self._held += 1
                self._cond.wait_for(lambda: not self._closed)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    @contextmanager
    def closed(self, drain_timeout_s: float) -> Iterator[HoldTiming]:
        """Hold new requests and wait for the ones in flight; reopen on leaving, whatever
        happened inside. Raises :class:`DrainTimeoutError` (reopened) when they do not finish
        within ``drain_timeout_s``."""
        timing = HoldTiming()
        with self._cond:
            self._closed, self._first_held, self._held = True, None, 0
            started = time.perf_counter()
            idle = self._cond.wait_for(lambda: self._in_flight == 0, timeout=drain_timeout_s)
            drained = time.perf_counter()
            timing.drain_s = drained - started
            if not idle:
                self._reopen(timing, started, drained)
                raise DrainTimeoutError(
                    f"requests in flight did not finish within {drain_timeout_s:g} s"
                )
        try:
            yield timing
        finally:
            with self._cond:
                self._reopen(timing, started, drained)

    def _reopen(self, timing: HoldTiming, started: float, drained: float) -> None:
        reopened = time.perf_counter()
        timing.held_s = reopened - started
        if self._first_held is not None:
            timing.pause_s = reopened - max(self._first_held, drained)
        timing.held_requests = self._held
        self._closed = False
        self._cond.notify_all()
