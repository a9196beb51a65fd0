"""Work that competes with serving for the engine's cores, on a thread the kernel schedules last.

Why: an in-memory change reads and checks its delta (prepare) inside the engine's process while
requests are still served; at the same priority it takes half of two cores from them and their
p99 jumps. Linux keeps a nice value per thread (``setpriority(PRIO_PROCESS, tid)`` changes only
that thread), so the work runs on a thread of its own at :data:`NICENESS`: it gets the cores the
requests leave idle, and when they want them the scheduler gives them ~10x its share. Raising a
nice value needs no privilege (lowering it again would, hence a fresh thread each time). The GIL
is not the bottleneck: the codec's compiled kernels, numpy and torch release it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: The nice value of the thread (0 is the requests'; 10 gets about a tenth of a contended core).
NICENESS = 10


def run_at_low_priority(work: Callable[[], T]) -> T:
    """``work()`` on a fresh thread at :data:`NICENESS`; its result, or its exception raised
    here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        # Where a thread has no nice value of its own, the work runs at the caller's priority.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        try:
            outcome.append(work())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="low-priority", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
