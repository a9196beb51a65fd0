"""The reference engine's prepare step runs on a thread of its own at a lower CPU priority."""

from __future__ import annotations

import os
import threading

import pytest

from deltaroll.engines.reference.low_priority import NICENESS, run_at_low_priority


def _my_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_work_runs_niced_and_the_caller_keeps_its_priority() -> None:
    before = _my_nice()
    assert run_at_low_priority(_my_nice) == max(before, NICENESS)
    assert _my_nice() == before


def test_an_exception_in_the_work_reaches_the_caller() -> None:
    def fails() -> None:
        raise ValueError("the delta does not check out")

    with pytest.raises(ValueError, match="does not check out"):
        run_at_low_priority(fails)
