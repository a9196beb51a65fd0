"""Bringing the objects of a plan into the local cache, verified, and pruning the cache after.

Everything on the path is fetched before anything is applied, so a corrupt or missing object
stops the agent with the weights untouched. Objects land in the store's resumable cache on the
pod's volume: an agent restarted mid-download fetches only what is still missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from deltaroll.store import Store
from deltaroll.store.graph import Plan, Step
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.transfer import download_objects


def plan_objects(steps: Iterable[Step]) -> list[ObjectRef]:
    """The distinct objects the steps need."""
    unique = {ref.digest: ref for step in steps for ref in step.delta.objects}
    return list(unique.values())


def fetch_objects(
    store: Store,
    model: str,
    steps: Iterable[Step],
    *,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Download every object of ``steps`` into the cache (verified); bytes actually downloaded.

    Raises the store's errors: ``TransientStoreError`` after its own retries (the agent backs
    off and tries again), ``CorruptObjectError`` naming the object (the agent fails), and
    ``TransferCancelledError`` once ``should_stop`` (asked before each object) says True.
    """
    refs = plan_objects(steps)
    return download_objects(
        store.catalog.backend,
        model,
        refs,
        store.cache,
        policy=store.catalog.policy,
        should_stop=should_stop,
    )


def prune_cache(store: Store, plan: Plan) -> int:
    """Keep only the objects of the plan's deltas (a rollback reverses them for free); drop
    the rest, anchors included (a full snapshot is not worth its disk). Returns files removed."""
    keep = {ref.digest for ref in plan_objects(s for s in plan.steps if s.kind != "anchor")}
    removed = 0
    root = store.cache.root
    if not root.is_dir():
        return 0
    for path in root.iterdir():
        if path.is_file() and path.name not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed
