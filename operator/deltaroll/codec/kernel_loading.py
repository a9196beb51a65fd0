"""Loading the compiled kernels off the critical path, and the numpy stand-ins meanwhile.

Why: numba and the compiled kernels take ~0.5 s of CPU to load, over a second from a cold page
cache; a diff of a half-gigabyte checkpoint reads its inputs from disk in about as long. A caller
that starts the load on a thread (:func:`start_loading_kernels`) gets
:mod:`deltaroll.codec.numpy_kernels` from :func:`diff_kernels` until it is done, so the first
windows are diffed while numba loads instead of after; a caller that did not start one loads
the compiled kernels on first use, as before. Work too small to repay the load runs on the
stand-ins alone (:func:`stand_ins_unless_loaded`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from deltaroll.codec import numpy_kernels
from deltaroll.collector import collector_paused

_started = threading.Event()
_finished = threading.Event()
_stand_ins = threading.local()


@contextmanager
def stand_ins_unless_loaded() -> Iterator[None]:
    """Within, on this thread, :func:`diff_kernels` gives the numpy stand-ins rather than
    loading the compiled kernels (it still gives those once they are loaded).

    Why: the load costs ~0.5 s of CPU, the stand-ins ~1-1.5 ns more per element diffed, so
    below a few hundred million elements the stand-ins finish first, on two cores or one.
    """
    _stand_ins.active = True
    try:
        yield
    finally:
        _stand_ins.active = False


def start_loading_kernels() -> None:
    """Start loading the compiled kernels on a thread of its own (once per process)."""
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_load, name="load-kernels", daemon=True).start()


def _load() -> None:
    # The import creates some 10^5 objects and frees few: the cyclic collector would walk them
    # again and again (~0.1 s of CPU).
    try:
        with collector_paused():
            import deltaroll.codec.kernels  # noqa: F401
    except Exception:  # noqa: S110 - diff_kernels imports again in the caller, and raises there
        pass
    finally:
        _finished.set()


def diff_kernels() -> ModuleType:
    """The compiled kernels, or their numpy stand-ins while a started load is under way (or,
    within :func:`stand_ins_unless_loaded`, until they are loaded)."""
    if _started.is_set() and not _finished.is_set():
        return numpy_kernels
    loaded = _finished.is_set() or "deltaroll.codec.kernels" in sys.modules
    if not loaded and getattr(_stand_ins, "active", False):
        return numpy_kernels
    return compiled_kernels()


def compiled_kernels() -> ModuleType:
    """The compiled kernels, waiting for a started load to finish (for steps whose numpy
    stand-in would need much more memory)."""
    if _started.is_set():
        _finished.wait()
    from deltaroll.codec import kernels

    return kernels
