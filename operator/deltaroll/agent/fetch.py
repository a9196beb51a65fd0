"""Bringing the objects of a plan into the local cache, verified, and pruning the cache after.

Everything on the path is fetched before anything is applied, so a corrupt or missing object
stops the agent with the weights untouched. With peers (:mod:`deltaroll.agent.peer_fetch`), the
objects this agent seeds come from the bucket while it waits for the others: from its node's
cache as soon as that holds them, else from peers, digest-checked; what nothing served in time
comes from the bucket after all (through the node cache); an object this agent comes to seed
while it waits (its first seeder left or died, or, to a standby, was slow) at once. Objects land
in the store's resumable cache on the pod's volume: an agent restarted mid-download fetches only
what is still missing. The cache may be shared with other agents (a node volume): objects are
held while in use, and pruning removes only what no live agent holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from deltaroll.agent.peer_fetch import PeerFetcher
from deltaroll.store import Store
from deltaroll.store.graph import Plan, Step
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import NodeCacheClient
from deltaroll.store.scope_prune import prune_unused_scopes
from deltaroll.store.transfer import download_objects


def plan_objects(steps: Iterable[Step]) -> list[ObjectRef]:
    """The distinct objects the steps need."""
    unique = {ref.digest: ref for step in steps for ref in step.delta.objects}
    return list(unique.values())


@dataclass(frozen=True)
class Transferred:
    """What one fetch moved: from the store (across the bucket link) and from peers;
    ``unpeered_objects``: those of the store's objects that peers should have served (none did
    in time, or no peer was listed at all)."""

    bucket_bytes: int = 0
    bucket_objects: int = 0
    peer_bytes: int = 0
    unpeered_objects: int = 0


@contextmanager
def fetched_objects(
    store: Store,
    model: str,
    steps: Iterable[Step],
    *,
    should_stop: Callable[[], bool] | None = None,
    peers: PeerFetcher | None = None,
    wanted: str | None = None,
    seed_among: Sequence[str] = (),
    node_cache: NodeCacheClient | None = None,
) -> Iterator[Transferred]:
    """Bring every object of ``steps`` into the cache (verified) and hold them there while
    the block runs (no agent sharing the cache prunes them); yields what crossed which link
    (with ``node_cache``, an object from the store is asked of the node's cache first, and only
    what this agent itself downloaded from the store counts as bucket bytes). With ``peers``,
    seeders are ranked among ``seed_among`` where the listing has any of them, else among the
    pods told to serve ``wanted`` (the pod's own annotations).

    Raises the store's errors: ``TransientStoreError`` after its own retries (the agent backs
    off and tries again), ``CorruptObjectError`` naming the object (the agent fails), and
    ``TransferCancelledError`` once ``should_stop`` (asked before each object) says True.
    """
    steps = list(steps)
    refs = plan_objects(steps)
    target = steps[-1].target if steps else None  # the id a pod that holds it all reports
    held: list[str] = []
    try:
        if peers is None:
            held += [ref.digest for ref in refs]
            yield _from_bucket(store, model, refs, should_stop, node_cache)
            return
        store.cache.hold(ref.digest for ref in refs)
        held += [ref.digest for ref in refs]
        missing = [ref for ref in refs if not store.cache.verified(ref.digest)]
        # the operator has just told the pods that move (this one too): see them, not a listing
        # from before, or each would think itself the only one pulling and seed everything
        peers.directory.refresh()
        # None (the peers cannot be listed now): wait for them like a non-seeder, rather than
        # every pod of the fleet fetching everything from the bucket at once
        seeds = {ref.digest: peers.seeds(ref.digest, wanted, target, seed_among) for ref in missing}
        alone = peers.directory.live() == {}  # listed, and no other pod serves
        seeded = [ref for ref in missing if seeds[ref.digest]]
        asked = [ref for ref in missing if not seeds[ref.digest]]
        held += [ref.digest for ref in seeded]
        taken_over: list[Transferred] = []

        def seed_now(ref: ObjectRef) -> None:  # this agent became its seeder while it waited
            held.append(ref.digest)
            taken_over.append(_from_bucket(store, model, [ref], should_stop, node_cache))

        with ThreadPoolExecutor(1, thread_name_prefix="agent-seed") as pool:
            seeding = pool.submit(_from_bucket, store, model, seeded, should_stop, node_cache)
            peer_bytes, left = peers.fetch(
                asked,
                store.cache,
                should_stop,
                wanted=wanted,
                target=target,
                seed_among=seed_among,
                node_cache=node_cache,
                seed_now=seed_now,
            )
            seed = seeding.result()
        held += [ref.digest for ref in left]
        rest = _from_bucket(store, model, left, should_stop, node_cache)
        downloads = [seed, rest, *taken_over]
        yield Transferred(
            sum(d.bucket_bytes for d in downloads),
            sum(d.bucket_objects for d in downloads),
            peer_bytes,
            len(left) + len(taken_over) + (len(seeded) if alone else 0),
        )
    finally:
        store.cache.release(held)


def _from_bucket(
    store: Store,
    model: str,
    refs: Sequence[ObjectRef],
    should_stop: Callable[[], bool] | None,
    node_cache: NodeCacheClient | None,
) -> Transferred:
    """Download ``refs`` from the store (through the node's cache, when there is one) into the
    cache, held there: the caller releases. Objects the node cache served are not the bucket's."""
    if not refs:
        return Transferred()
    missing = {ref.digest for ref in refs if not store.cache.has(ref.digest)}
    from_node: set[str] = set()
    received = download_objects(
        store.catalog.backend,
        model,
        refs,
        store.cache,
        policy=store.catalog.policy,
        should_stop=should_stop,
        node_cache=node_cache,
        served_by_node=from_node,
    )
    return Transferred(received, len(missing - from_node))


def prune_cache(
    store: Store, plan: Plan, kept: Collection[str], *, keep_anchors: bool = False
) -> frozenset[str]:
    """Keep the objects of the plan's deltas (a rollback reverses them for free) instead of
    ``kept`` (what the last call kept); drop the rest, anchors included (a full snapshot is not
    worth its disk) unless ``keep_anchors`` (an agent serving peers: pods that start later get
    the snapshot from it instead of the store), and unless another process sharing the cache
    holds them; and the scopes of the cache directory nobody used for a day (old credentials,
    another store). Returns what is kept."""
    steps = [s for s in plan.steps if keep_anchors or s.kind != "anchor"]
    keep = frozenset(ref.digest for ref in plan_objects(steps))
    store.cache.hold(keep)
    store.cache.release(kept)
    store.cache.prune()
    prune_unused_scopes(store.cache.root)
    return keep
