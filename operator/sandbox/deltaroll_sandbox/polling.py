"""Waiting in tests: poll a condition until it holds, and fail with what was last seen.

Tests on a sandbox wait for what they assert (a pod Ready, a status written), never for a fixed
time: ``wait_for(lambda: ..., timeout=60, what="pod ready")``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    what: str = "condition",
    log: Callable[[], str] | None = None,
    *,
    interval: float = 0.05,
) -> Any:
    """Poll until ``predicate()`` is truthy and return that value; otherwise fail with its last
    value and, when given, the tail of ``log()`` (an operator's or a pod's output)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    message = f"{what} not met within {timeout}s; last value: {value!r}"
    if log is not None:
        message += f"\n{log()[-4000:]}"
    raise AssertionError(message)
