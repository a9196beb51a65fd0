"""Bringing the objects of a plan into the local cache, verified, and pruning the cache after.

Everything on the path is fetched before anything is applied, so a corrupt or missing object
stops the agent with the weights untouched. Objects land in the store's resumable cache on the
pod's volume: an agent restarted mid-download fetches only what is still missing. The cache may
be shared with other agents (a node volume): objects are held while in use, and pruning removes
only what no live agent holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager

from deltaroll.store import Store
from deltaroll.store.graph import Plan, Step
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import NodeCacheClient
from deltaroll.store.transfer import download_objects


def plan_objects(steps: Iterable[Step]) -> list[ObjectRef]:
    """The distinct objects the steps need."""
    unique = {ref.digest: ref for step in steps for ref in step.delta.objects}
    return list(unique.values())


@contextmanager
def fetched_objects(
    store: Store,
    model: str,
    steps: Iterable[Step],
    *,
    should_stop: Callable[[], bool] | None = None,
    node_cache: NodeCacheClient | None = None,
) -> Iterator[int]:
    """Download every object of ``steps`` into the cache (verified) and hold them there while
    the block runs (no agent sharing the cache prunes them); yields bytes actually downloaded
    from the store (with ``node_cache``, each object is asked of the node's cache first).

    Raises the store's errors: ``TransientStoreError`` after its own retries (the agent backs
    off and tries again), ``CorruptObjectError`` naming the object (the agent fails), and
    ``TransferCancelledError`` once ``should_stop`` (asked before each object) says True.
    """
    refs = plan_objects(steps)
    try:
        yield download_objects(
            store.catalog.backend,
            model,
            refs,
            store.cache,
            policy=store.catalog.policy,
            should_stop=should_stop,
            node_cache=node_cache,
        )
    finally:
        store.cache.release(ref.digest for ref in refs)


def prune_cache(store: Store, plan: Plan, kept: Collection[str]) -> frozenset[str]:
    """Keep the objects of the plan's deltas (a rollback reverses them for free) instead of
    ``kept`` (what the last call kept); drop the rest, anchors included (a full snapshot is not
    worth its disk), unless another process sharing the cache holds them. Returns what is kept."""
    keep = frozenset(
        ref.digest for ref in plan_objects(s for s in plan.steps if s.kind != "anchor")
    )
    store.cache.hold(keep)
    store.cache.release(kept)
    store.cache.prune()
    return keep
