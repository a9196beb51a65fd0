"""A test hook in product code, and a no-op unless ``DELTAROLL_CRASH_AT`` is set: named points
where tests kill the process for real, to prove in-place apply is crash-safe.

It stays here, beside the code it interrupts, because a crash test must kill the very process
that runs the real apply (the worker's or the agent's), not a copy of it; in production the
variable is never set and :func:`crash_point` returns at once, reading one environment variable.

Set ``DELTAROLL_CRASH_AT=<point>[@<detail>][:<n>]`` and the process sends itself SIGKILL (no
cleanup, no ``finally``) the n-th time (default the first) it reaches ``<point>`` with that
``detail`` (e.g. a tensor name; any detail when omitted).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "DELTAROLL_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(name: str, detail: str | None = None) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, nth = spec.rpartition(":") if spec.rpartition(":")[2].isdigit() else (spec, "", "")
    point, _, wanted = point.partition("@")
    if point != name or wanted and wanted != detail:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
