"""Getting objects from peer agents instead of the bucket, without trusting any peer.

For each object the agent either seeds it (it ranks among the first ``seeders`` live pods for
the object's digest, :func:`deltaroll.api.peers.seeders`: it fetches from the bucket) or asks
the peers, in the rank every agent agrees on (seeders first). A peer's bytes go to the cache's
staging area, at most the object's size, and enter the cache only if their sha256 is the
object's name; a peer that sent wrong bytes is not asked again in this pull. A peer that is gone,
silent for ``timeout_s`` or cut off mid-object is skipped; when no peer has served the object
within ``wait_s``, or this agent has become a seeder (one left), the object is left to the
bucket.
"""

from __future__ import annotations

import enum
import http.client
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from deltaroll.agent.metrics import AgentMetrics
from deltaroll.agent.peer_directory import Peer, PeerDirectory
from deltaroll.api.peers import DEFAULT_SEEDERS, object_path, rank, seeders
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.cache import ObjectCache
from deltaroll.store.manifests import ObjectRef

log = structlog.get_logger(__name__)

_BLOCK = 256 << 10
POLL_S = 0.25
PEER_WORKERS = 4


class _Outcome(enum.Enum):
    RECEIVED = "received"
    NOT_THERE = "not there"  # 404 or 503: it may hold it later
    GONE = "gone"  # refused, silent, cut off
    WRONG = "wrong bytes"


@dataclass
class PeerFetcher:
    """One agent's way to its peers' objects."""

    directory: PeerDirectory
    own_name: str
    model: str
    metrics: AgentMetrics
    seeders: int = DEFAULT_SEEDERS
    wait_s: float = 30.0
    timeout_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _distrusted: set[str] = field(default_factory=set)

    def seeds(self, digest: str) -> bool:
        """Whether this agent fetches ``digest`` from the bucket."""
        names = [*self.directory.live(), self.own_name]
        return self.own_name in seeders(digest, names, self.seeders)

    def fetch(
        self,
        refs: Sequence[ObjectRef],
        cache: ObjectCache,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[int, list[ObjectRef]]:
        """Bring what peers serve of ``refs`` into ``cache`` (the caller holds them there);
        (bytes received, the objects left to the bucket)."""
        left: list[ObjectRef] = []

        def one(ref: ObjectRef) -> None:
            if not self._fetch_one(ref, cache, should_stop):
                left.append(ref)

        self._distrusted = set()
        run_all(one, refs, workers=PEER_WORKERS)
        unserved = {ref.digest for ref in left}
        return sum(ref.size for ref in refs if ref.digest not in unserved), left

    def _fetch_one(
        self, ref: ObjectRef, cache: ObjectCache, should_stop: Callable[[], bool] | None
    ) -> bool:
        deadline = self.clock() + self.wait_s
        while not (should_stop is not None and should_stop()):
            if cache.verified(ref.digest):  # another agent sharing the cache brought it
                return True
            peers = self.directory.live()
            order = rank(ref.digest, [*peers, self.own_name])
            if self.own_name in order[: self.seeders]:
                return False  # a seeder left: this agent seeds it now
            for name in order:
                if name in peers and name not in self._distrusted:
                    outcome = self._get(name, peers[name], ref, cache)
                    if outcome is _Outcome.RECEIVED:
                        return True
                    if outcome is _Outcome.WRONG:
                        self._distrusted.add(name)
            if self.clock() >= deadline:
                log.info("agent.peers_too_slow", digest=ref.digest, waited_s=self.wait_s)
                return False
            self.sleep(POLL_S)
        return False

    def _get(self, name: str, peer: Peer, ref: ObjectRef, cache: ObjectCache) -> _Outcome:
        staged = cache.staging_path(ref.digest)
        connection = http.client.HTTPConnection(peer.host, peer.port, timeout=self.timeout_s)
        try:
            connection.request("GET", object_path(self.model, ref.digest))
            response = connection.getresponse()
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
