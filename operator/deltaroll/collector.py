"""Pausing Python's cyclic garbage collector while a step builds many objects that form no cycles.

Building 10^5 objects (a large manifest's tensor entries, the import of the compiled kernels)
makes the collector walk the growing heap again and again: two thirds of the time of building a
100,000-tensor manifest's entries went there. gc has only a process-wide switch, so pauses nest
and overlap across threads: the collector comes back when the last one ends, and only if it was
on before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off for the block (reference counting still frees everything)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
