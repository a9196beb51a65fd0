"""Getting objects from peer agents instead of the bucket, without trusting any peer.

For each object the agent either seeds it (it ranks among the first ``seeders`` of the pods that
want the same version, :func:`deltaroll.api.peers.seeders`: it fetches from the bucket) or waits
for it: it takes the object from its node's cache if that holds it (no link crossed at all), or
once the fill another agent of the node has under way lands, else asks the peers, in the rank
every agent agrees on (seeders first, then pods that hold other versions); a peer pulling the
same version is asked to answer when it holds the object (a few seconds at most), so the object
moves as soon as it lands, and no fleet of waiting agents polls the seeders while they fetch.
Pods told to serve another version are never counted as seeders: in a canary step the pulling
pods seed among themselves instead of waiting for idle ones; and once a pod reports serving the
version (a canary's later steps), nobody seeds: it holds every object. A peer's bytes go to the
cache's staging area, at most the object's size, and enter the cache only if their sha256 is the
object's name; a peer that sent wrong bytes is not asked again in this pull. A peer that is
gone, silent for ``timeout_s``, cut off mid-object or refusing this agent's token is skipped;
when nothing served the object within ``wait_s``, or this agent has become a seeder (one left),
the object is left to the bucket (through the node cache's fill lease: once per node). Each
request carries the agent's pod-bound token for the peers' audience.
"""

from __future__ import annotations

import enum
import http.client
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from deltaroll.agent.metrics import AgentMetrics
from deltaroll.agent.peer_directory import Peer, PeerDirectory
from deltaroll.api.peers import DEFAULT_SEEDERS, MAX_WAIT_S, WAIT_HEADER, object_path, rank
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.cache import ObjectCache
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import NodeCacheClient

log = structlog.get_logger(__name__)

_BLOCK = 256 << 10
POLL_S = 0.25
#: The longest one request waits at one peer, or at the node cache, for an object: a newer
#: annotation (a superseded pull) is noticed within it; one request per object per wait stays
#: cheap next to the four rounds a second over every peer that polling made.
WAIT_S = 2.0
PEER_WORKERS = 4


class _Outcome(enum.Enum):
    RECEIVED = "received"
    NOT_THERE = "not there"  # 404 or 503: it may hold it later
    REFUSED = "refused"  # 401 or 403: our token, or we are not of its ModelDeployment
    GONE = "gone"  # refused the connection, silent, cut off
    WRONG = "wrong bytes"


@dataclass
class PeerFetcher:
    """One agent's way to its peers' objects."""

    directory: PeerDirectory
    own_name: str
    model: str
    metrics: AgentMetrics
    token_file: Path | None = None
    seeders: int = DEFAULT_SEEDERS
    wait_s: float = 30.0
    timeout_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _distrusted: set[str] = field(default_factory=set)
    #: (peer, digest): a peer serving the target that could not give this object in this pull
    #: (it reached the version by another path, or claims what it does not hold).
    _lacking: set[tuple[str, str]] = field(default_factory=set)

    def seeds(self, digest: str, wanted: str | None, target: str | None = None) -> bool | None:
        """Whether this agent fetches ``digest`` from the bucket, ranked among the pods told to
        serve ``wanted`` (a name, as the operator writes it), unless a pod serves ``target``
        (the version's id, as agents report it) already; None while the peers cannot be
        listed."""
        peers = self.directory.live()
        return None if peers is None else self._is_seeder(digest, peers, wanted, target)

    def fetch(
        self,
        refs: Sequence[ObjectRef],
        cache: ObjectCache,
        should_stop: Callable[[], bool] | None = None,
        *,
        wanted: str | None = None,
        target: str | None = None,
        node_cache: NodeCacheClient | None = None,
    ) -> tuple[int, list[ObjectRef]]:
        """Bring what the node cache or peers serve of ``refs`` into ``cache`` (the caller holds
        them there); (bytes received from peers, the objects left to the bucket)."""
        left: list[ObjectRef] = []
        from_peers: list[int] = []

        def one(ref: ObjectRef) -> None:
            outcome = self._fetch_one(ref, cache, should_stop, wanted, target, node_cache)
            if outcome is None:
                left.append(ref)
            elif outcome is _Outcome.RECEIVED:
                from_peers.append(ref.size)

        self._distrusted, self._lacking = set(), set()
        run_all(one, refs, workers=PEER_WORKERS)
        return sum(from_peers), left

    def _is_seeder(
        self, digest: str, peers: dict[str, Peer], wanted: str | None, target: str | None
    ) -> bool:
        if any(self._holds(name, peer, digest, target) for name, peer in peers.items()):
            return False  # a pod serves the version: it holds the object, ask it
        # ranked among the pods still pulling: one that serves the version will fetch nothing
        pulling = [name for name, peer in peers.items() if _pulling(peer, wanted, target)]
        return self.own_name in rank(digest, [*pulling, self.own_name])[: self.seeders]

    def _holds(self, name: str, peer: Peer, digest: str, target: str | None) -> bool:
        """Whether ``peer`` should hold ``digest``: it serves ``target`` (so it fetched what
        led there) and has not, in this pull, failed to give it or lied."""
        return target is not None and peer.serves == target and self._askable(name, digest)

    def _askable(self, name: str, digest: str) -> bool:
        """Whether ``name`` may be asked for ``digest`` in this pull: it has not lied, nor,
        serving the version, failed to give this object."""
        return name not in self._distrusted and (name, digest) not in self._lacking

    def _fetch_one(
        self,
        ref: ObjectRef,
        cache: ObjectCache,
        should_stop: Callable[[], bool] | None,
        wanted: str | None,
        target: str | None,
        node_cache: NodeCacheClient | None,
    ) -> _Outcome | None:
        """RECEIVED (from a peer), NOT_THERE (it came another way: the node, the shared cache)
        or None (left to the bucket)."""
        deadline = self.clock() + self.wait_s
        while not (should_stop is not None and should_stop()):
            started = self.clock()
            if cache.verified(ref.digest):  # another agent sharing the cache brought it
                return _Outcome.NOT_THERE
            # a fill under way on the node is waited for; with none the answer comes at once
            if node_cache is not None and _from_node(node_cache, ref, cache, self._wait(deadline)):
                return _Outcome.NOT_THERE
            peers = self.directory.live()
            if peers is not None:
                if self._is_seeder(ref.digest, peers, wanted, target):
                    return None  # a seeder left (or none was listed before): it seeds it now
                for name in self._order(ref.digest, peers, wanted):
                    peer = peers[name]
                    # a peer pulling the same version will hold it: it answers when it does
                    pulling = wanted is not None and _pulling(peer, wanted, target)
                    wait_s = self._wait(deadline) if pulling else 0.0
                    outcome = self._get(name, peer, ref, cache, wait_s)
                    if outcome is _Outcome.RECEIVED:
                        return outcome
                    if outcome is _Outcome.WRONG:
                        self._distrusted.add(name)
                    elif self._holds(name, peer, ref.digest, target):
                        # it serves the version but could not give this object: rank without it
                        self._lacking.add((name, ref.digest))
                        break
            if self.clock() >= deadline:
                log.info("agent.peers_too_slow", digest=ref.digest, waited_s=self.wait_s)
                return None
            self.sleep(max(0.0, POLL_S - (self.clock() - started)))  # none if a wait ran
        return None

    def _wait(self, deadline: float) -> float:
        """How long one request may wait for the object: a few seconds, so that a seeder that
        left, a newer annotation or the deadline is noticed in time."""
        return max(0.0, min(WAIT_S, MAX_WAIT_S, deadline - self.clock()))

    def _order(self, digest: str, peers: dict[str, Peer], wanted: str | None) -> list[str]:
        """Peers to ask: those pulling ``wanted`` (seeders first), then the others (they may
        hold it from an earlier version), none that lied in this pull or, serving the version,
        could not give this object."""
        trusted = [name for name in peers if self._askable(name, digest)]
        pulling = [name for name in trusted if wanted is None or peers[name].wants == wanted]
        return rank(digest, pulling) + rank(digest, set(trusted) - set(pulling))

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def _get(
        self, name: str, peer: Peer, ref: ObjectRef, cache: ObjectCache, wait_s: float
    ) -> _Outcome:
        staged = cache.staging_path(ref.digest)
        timeout = self.timeout_s + wait_s
        connection = http.client.HTTPConnection(peer.host, peer.port, timeout=timeout)
        headers = self._headers() | ({WAIT_HEADER: f"{wait_s:.3f}"} if wait_s > 0 else {})
        try:
            connection.request("GET", object_path(self.model, ref.digest), headers=headers)
            response = connection.getresponse()
            if response.status in (401, 403):
                reason = response.read(4096).decode(errors="replace")
                log.warning("agent.peer_refused_us", peer=name, status=response.status,
                            reason=reason, hint="project a ServiceAccount token for the "
                            "deltaroll-peer audience and pass it as --peer-token")  # fmt: skip
                return _Outcome.REFUSED
            if response.status != 200:
                return _Outcome.NOT_THERE
            written = 0
            with open(staged, "wb") as out:
                # one byte more than the object at most: a longer body is wrong, not kept
                while written <= ref.size and (block := response.read(_BLOCK)):
                    out.write(block)
                    written += len(block)
            if written < ref.size:  # the peer went away mid-object
                return _Outcome.GONE
            actual = cache.commit(ref.digest, staged)
        except (OSError, http.client.HTTPException) as exc:
            log.info("agent.peer_failed", peer=name, digest=ref.digest, error=type(exc).__name__)
            return _Outcome.GONE
        finally:
            connection.close()
            staged.unlink(missing_ok=True)
        if actual != ref.digest:
            log.warning("agent.peer_sent_wrong_bytes", peer=name, digest=ref.digest, found=actual)
            self.metrics.peer_rejected.inc()
            return _Outcome.WRONG
        self.metrics.peer_bytes.inc(ref.size)
        return _Outcome.RECEIVED


def _pulling(peer: Peer, wanted: str | None, target: str | None) -> bool:
    """Whether ``peer`` is told to serve ``wanted`` (any version when None) and does not serve
    ``target`` yet: it will fetch the objects, it does not hold them."""
    return (wanted is None or peer.wants == wanted) and (target is None or peer.serves != target)


def _from_node(
    node_cache: NodeCacheClient, ref: ObjectRef, cache: ObjectCache, wait_s: float
) -> bool:
    """Take ``ref`` into ``cache`` if the node cache holds it now or once another agent's fill
    under way lands within ``wait_s`` (a peek: no fill lease)."""
    staged = cache.staging_path(ref.digest)
    try:
        hashed = node_cache.take(ref, staged, wait_s)
        return hashed is not None and cache.commit(ref.digest, staged, hashed=hashed) == ref.digest
    finally:
        staged.unlink(missing_ok=True)
