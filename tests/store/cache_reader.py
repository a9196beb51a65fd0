"""A second agent process for the shared-cache tests: fetch a plan's objects into a cache it
shares, hold them, say so, wait for the go, then read every object of the plan as an agent's
apply does (the manifest checked, the payload linked into a delta directory).

    python cache_reader.py STORE_URI CACHE_DIR MODEL FROM TO READY_FILE GO_FILE WORK_DIR

Exits 0 with "read" once every object was read, 1 with the error otherwise."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deltaroll.agent.fetch import fetched_objects
from deltaroll.store import Store
from deltaroll.store.pull import materialize_delta


def main(uri: str, cache: str, model: str, start: str, target: str, *paths: str) -> int:
    ready, go, work = (Path(p) for p in paths)
    store = Store(uri, cache_dir=Path(cache))
    plan = store.plan(model, target, [start])
    with fetched_objects(store, model, plan.steps):
        ready.write_text("fetched")
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            for index, step in enumerate(plan.steps):
                materialize_delta(step, store.cache, work / f"delta-{index}")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            print(f"{type(exc).__name__}: {exc}")
            return 1
    print("read")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
