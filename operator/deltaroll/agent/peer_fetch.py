"""Getting objects from peer agents instead of the bucket, without trusting any peer.

For each object the agent either seeds it (it ranks first, :func:`deltaroll.api.peers.seeders`,
among the pods the operator named with the version, else among the pods that want the same
version: it fetches from the bucket), stands by (it ranks among the next ``seeders - 1``: it asks
the first seeder, and fetches from the bucket too only when that one is gone or has not served
the object within ``standby_grace_s``, so an object usually crosses the bucket link once, and a
seeder dying mid-transfer costs the fleet no more than the grace), or waits for it: it takes the
object from its node's cache if that holds it (no link crossed at all), or once the fill another
agent of the node has under way lands, else asks the peers, in the rank every agent agrees on
(seeders first, then pods that hold other versions). Where the first seeder of the object does
not run on its node, the agent that claims the node cache's fill lease first asks the peers for
the whole node and uploads what it got; the node's other agents wait for that fill instead of
each taking the object across the node's link (where the first seeder runs on the node, it fills
the node cache from the bucket and the others only peek, so none holds a fill it waits on). One
round of asks waits a few seconds in all, then the listing and the agent's part are read again.
A peer pulling the same version is asked to answer when it holds the object (a few seconds at
most), so the object moves as soon as it lands, and no fleet of waiting agents polls the seeders
while they fetch.
Pods told to serve another version are never counted as seeders: in a canary step the pulling
pods seed among themselves instead of waiting for idle ones; and once a pod reports serving the
version (a canary's later steps), nobody seeds: it holds every object. A peer's bytes go to the
cache's staging area, at most the object's size, and enter the cache only if their sha256 is the
object's name; a peer that sent wrong bytes is not asked again in this pull. A peer that is
gone, silent for ``timeout_s``, cut off mid-object or refusing this agent's token is skipped;
when nothing served the object within ``wait_s``, or this agent has become the first seeder (one
left), the object is left to the bucket (through the node cache's fill lease: once per node).
Each request carries the agent's pod-bound token for the peers' audience.
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
from deltaroll.api.node_cache import FillLease
from deltaroll.api.peers import (
    ARRIVING_HEADER,
    DEFAULT_SEEDERS,
    MAX_WAIT_S,
    WAIT_HEADER,
    object_path,
    rank,
)
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.cache import ObjectCache, StagedHash
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import Claim, LeaseKeeper, NodeCacheClient

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
    SEED = "this agent seeds it now: its first seeder left or died, or was slow to a standby"
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
    #: how long a standby seeder waits for the first seeder's copy before fetching it from the
    #: bucket too (at once when the first seeder is gone)
    standby_grace_s: float = 5.0
    #: how long the pod waits for the seeder of its node to fill the node cache before it asks
    #: that seeder and the other peers itself (the seeder may hold the object without filling)
    seeder_grace_s: float = 10.0
    timeout_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _distrusted: set[str] = field(default_factory=set)
    #: (peer, digest): a peer serving the target that could not give this object in this pull
    #: (it reached the version by another path, or claims what it does not hold).
    _lacking: set[tuple[str, str]] = field(default_factory=set)

    def seeds(
        self,
        digest: str,
        wanted: str | None,
        target: str | None = None,
        seed_among: Sequence[str] = (),
    ) -> bool | None:
        """Whether this agent fetches ``digest`` from the bucket now: it ranks first among
        ``seed_among`` (the pods the operator named with ``wanted``) where the listing has any
        of them, else among the pods told to serve ``wanted`` (a name, as the operator writes
        it); never once a pod serves ``target`` (the version's id, as agents report it). None
        while the peers cannot be listed."""
        peers = self.directory.live()
        if peers is None:
            return None
        return self._seeders(digest, peers, _Pull(wanted, target, tuple(seed_among)))[:1] == [
            self.own_name
        ]

    def fetch(
        self,
        refs: Sequence[ObjectRef],
        cache: ObjectCache,
        should_stop: Callable[[], bool] | None = None,
        *,
        wanted: str | None = None,
        target: str | None = None,
        seed_among: Sequence[str] = (),
        node_cache: NodeCacheClient | None = None,
        seed_now: Callable[[ObjectRef], None],
    ) -> tuple[int, list[ObjectRef]]:
        """Bring what the node cache or peers serve of ``refs`` into ``cache`` (the caller holds
        them there); (bytes received from peers, the objects left to the bucket). An object this
        agent comes to seed goes to ``seed_now`` in the same worker, at once: its pull's other
        objects may wait on other agents that in turn wait for this one (two standbys of a
        seeder that died), so it must not wait for them."""
        left: list[ObjectRef] = []
        from_peers: list[int] = []
        pull = _Pull(wanted, target, tuple(seed_among))

        def one(ref: ObjectRef) -> None:
            # a fill lease of the node's never outlives this agent's attempt: it is uploaded or
            # given up, so the node's others never wait on an object left to a later download
            # (which asks the node cache again)
            fill = _NodeFill(node_cache, ref)
            try:
                outcome = self._fetch_one(ref, cache, should_stop, pull, fill)
            finally:
                fill.abandon()
            if outcome is _Outcome.SEED:
                seed_now(ref)
            elif outcome is None:
                left.append(ref)
            elif outcome is _Outcome.RECEIVED:
                from_peers.append(ref.size)

        self._distrusted, self._lacking = set(), set()
        listed = self.directory.live()
        if listed is not None:  # its standby objects first: its node-mates wait for those
            refs = sorted(
                refs, key=lambda ref: self.own_name not in self._seeders(ref.digest, listed, pull)
            )
        run_all(one, refs, workers=PEER_WORKERS)
        return sum(from_peers), left

    def _seeders(self, digest: str, peers: dict[str, Peer], pull: _Pull) -> list[str]:
        """The pods (this one among them) that may fetch ``digest`` from the bucket, the first
        first: none once a pod serves the version (it holds the object: ask it)."""
        if any(self._holds(name, peer, digest, pull.target) for name, peer in peers.items()):
            return []
        named = [name for name in pull.seed_among if name == self.own_name or name in peers]
        if named:  # every agent of the patch round agrees, whoever it has seen told so far
            return rank(digest, named)[: self.seeders]
        # ranked among the pods still pulling: one that serves the version will fetch nothing
        pulling = [name for name, peer in peers.items() if _pulling(peer, pull.wanted, pull.target)]
        return rank(digest, [*pulling, self.own_name])[: self.seeders]

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
        pull: _Pull,
        fill: _NodeFill,
    ) -> _Outcome | None:
        """RECEIVED (from a peer), NOT_THERE (it came another way: the node, the shared cache),
        SEED (this agent fetches it from the bucket now) or None (left to the bucket: no peer
        served it in time)."""
        began = self.clock()
        deadline = began + self.wait_s
        rounds = 0
        standby = _Standby(self.standby_grace_s)
        while not (should_stop is not None and should_stop()):
            started = self.clock()
            if cache.verified(ref.digest):  # another agent sharing the cache brought it
                fill.upload(cache)
                return _Outcome.NOT_THERE
            role = self._node_role(ref.digest, pull)
            if role is _Role.SEEDED and started - began >= self.seeder_grace_s:
                role = _Role.ALONE  # its seeder has not filled the node: ask it and the others
            node = fill.round(role, cache, self._wait(deadline))
            if node is _Node.HAS_IT:
                return _Outcome.NOT_THERE
            peers = self.directory.live()
            seated = [] if peers is None else self._seeders(ref.digest, peers, pull)
            if self.own_name in seated[:1]:
                return _Outcome.SEED  # the first seeder left (or none was listed before)
            if standby.seated(self.own_name in seated, since=started, now=self.clock()):
                log.info("agent.standby_seeds", digest=ref.digest, first=seated[0],
                         waited_s=self.standby_grace_s)  # fmt: skip
                return _Outcome.SEED
            if peers is not None and node is _Node.ASK_PEERS:
                # the seeders take turns at the head once a standby would have fetched it: a
                # first seeder that holds every request without the object is not asked alone
                turn = rounds if started - began >= self.standby_grace_s else 0
                asked = _Ask(ref, cache, pull, fill, peers, seated, standby)
                outcome = self._ask_round(asked, turn, self.clock() + self._wait(deadline))
                if outcome is not None:
                    return outcome
            if self.clock() >= deadline:
                log.info("agent.peers_too_slow", digest=ref.digest, waited_s=self.wait_s)
                return None
            rounds += 1
            self.sleep(max(0.0, POLL_S - (self.clock() - started)))  # none if a wait ran
        return None

    def _ask_round(self, ask: _Ask, turn: int, round_end: float) -> _Outcome | None:
        """Ask the peers for ``ask.ref`` in rank order until one gives it (RECEIVED), this
        agent must seed it (SEED: it stood by for the first seeder, and that one died), or the
        round's wait is spent (None). One round waits WAIT_S in all, then the listing and this
        agent's role are read again: a pod holding its node's fill hands it to a seeder just
        told to move, instead of waiting at every pulling peer in turn (2 s each: a 64-pod
        fleet's seeder waited out the 30 s deadline for that fill)."""
        ref, pull, seated, standby = ask.ref, ask.pull, ask.seated, ask.standby
        # filling for the node: its pods pulling the version wait for this very fill
        skip = self.directory.own_node() if ask.fill.lease is not None else None
        order = self._order(ref.digest, ask.peers, pull, seated, turn, skip_node=skip)
        round_end = standby.round_end(round_end)  # its grace ends a round early: it seeds then
        waited = False
        for name in order:
            if waited and self.clock() >= round_end:
                break
            peer = ask.peers[name]
            # a seeder, or a peer pulling the same version, will hold it: it answers when it does
            coming = name in seated or (
                pull.wanted is not None and _pulling(peer, pull.wanted, pull.target)
            )
            wait_s = max(0.0, round_end - self.clock()) if coming else 0.0
            waited = waited or wait_s > 0
            outcome, arriving = self._get(name, peer, ref, ask.cache, wait_s)
            if outcome is _Outcome.RECEIVED:
                ask.fill.upload(ask.cache)
                return outcome
            if standby.since is not None and name == seated[0]:  # it stands by for this one
                if outcome is _Outcome.GONE:
                    return _Outcome.SEED  # the first seeder died: fetch it at once
                standby.heard(arriving, self.clock())
            if outcome is _Outcome.WRONG:
                self._distrusted.add(name)
            elif self._holds(name, peer, ref.digest, pull.target):
                # it serves the version but could not give this object: rank without it
                self._lacking.add((name, ref.digest))
                break
        return None

    def _node_role(self, digest: str, pull: _Pull) -> _Role:
        """This agent's part in bringing ``digest`` to its node: see :class:`_Role`. A seeder
        ranked before it on its node fills the node: the first from the bucket, a standby from
        the first seeder (as the node's filler, so that when it comes to seed, no node-mate
        holds the node's fill its download would wait for)."""
        node, peers = self.directory.own_node(), self.directory.live()
        if node is None or peers is None:
            return _Role.ALONE
        seated = self._seeders(digest, peers, pull)
        before = seated[: seated.index(self.own_name)] if self.own_name in seated else seated
        if any(name in peers and peers[name].node == node for name in before):
            return _Role.SEEDED
        return _Role.FILLS

    def _wait(self, deadline: float) -> float:
        """How long one request may wait for the object: a few seconds, so that a seeder that
        left, a newer annotation or the deadline is noticed in time."""
        return max(0.0, min(WAIT_S, MAX_WAIT_S, deadline - self.clock()))

    def _order(
        self,
        digest: str,
        peers: dict[str, Peer],
        pull: _Pull,
        seated: list[str],
        turn: int,
        *,
        skip_node: str | None = None,
    ) -> list[str]:
        """Peers to ask: the seeders (the ``turn``-th first), then pods that serve the version
        (they hold it: asked without a wait, so that pulling pods ranked above them do not take
        the round), then those pulling ``pull.wanted``, then the others (they may hold it from
        an earlier version); none that lied in this pull or, serving the version, could not
        give this object, nor a pod of ``skip_node`` still pulling the version."""
        trusted = [
            name
            for name, peer in peers.items()
            if self._askable(name, digest)
            and not (
                skip_node is not None
                and peer.node == skip_node
                and _pulling(peer, pull.wanted, pull.target)
            )
        ]
        ahead = [name for name in seated if name in trusted]
        if ahead:
            ahead = ahead[turn % len(ahead) :] + ahead[: turn % len(ahead)]
        pulling = {
            name for name in trusted if pull.wanted is None or peers[name].wants == pull.wanted
        }
        holding = {name for name in trusted if self._holds(name, peers[name], digest, pull.target)}
        rest = set(trusted) - set(ahead) - holding
        return (
            ahead
            + rank(digest, holding)
            + rank(digest, rest & pulling)
            + rank(digest, rest - pulling)
        )

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def _get(
        self, name: str, peer: Peer, ref: ObjectRef, cache: ObjectCache, wait_s: float
    ) -> tuple[_Outcome, int]:
        """The outcome, and how many bytes of the object the peer said it has received so far
        (0 unless it answered that it is fetching it)."""
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
                return _Outcome.REFUSED, 0
            if response.status != 200:
                return _Outcome.NOT_THERE, _arriving(response.getheader(ARRIVING_HEADER))
            written = 0
            with open(staged, "wb") as out:
                # one byte more than the object at most: a longer body is wrong, not kept
                while written <= ref.size and (block := response.read(_BLOCK)):
                    out.write(block)
                    written += len(block)
            if written < ref.size:  # the peer went away mid-object
                return _Outcome.GONE, 0
            actual = cache.commit(ref.digest, staged)
        except (OSError, http.client.HTTPException) as exc:
            log.info("agent.peer_failed", peer=name, digest=ref.digest, error=type(exc).__name__)
            return _Outcome.GONE, 0
        finally:
            connection.close()
            staged.unlink(missing_ok=True)
        if actual != ref.digest:
            log.warning("agent.peer_sent_wrong_bytes", peer=name, digest=ref.digest, found=actual)
            self.metrics.peer_rejected.inc()
            return _Outcome.WRONG, 0
        self.metrics.peer_bytes.inc(ref.size)
        return _Outcome.RECEIVED, 0


def _arriving(value: str | None) -> int:
    """The bytes a peer's :data:`~deltaroll.api.peers.ARRIVING_HEADER` says it has received:
    0 for none, or anything but a short decimal number (it only lengthens a standby's wait)."""
    if value is None or not (len(value) <= 20 and value.isascii() and value.isdigit()):
        return 0
    return int(value)


def _pulling(peer: Peer, wanted: str | None, target: str | None) -> bool:
    """Whether ``peer`` is told to serve ``wanted`` (any version when None) and does not serve
    ``target`` yet: it will fetch the objects, it does not hold them."""
    return (wanted is None or peer.wants == wanted) and (target is None or peer.serves != target)


@dataclass(frozen=True)
class _Pull:
    """What one pull is for: the version the pod is told (a name, as the operator writes it),
    the id it leads to (as agents report it), and the pods named to seed its objects."""

    wanted: str | None
    target: str | None
    seed_among: tuple[str, ...] = ()


@dataclass
class _Standby:
    """This agent's wait as an object's standby seeder: since when (None: it is not the
    standby now), and the most the first seeder said it had received of the object."""

    grace_s: float
    since: float | None = None
    first_had: int = 0

    def seated(self, standby: bool, *, since: float, now: float) -> bool:
        """Note whether this agent stands by (from ``since``, if it just began); True once it
        has waited its grace for the first seeder: it seeds then."""
        if not standby:
            self.since = None
        elif self.since is None:
            self.since = since
        else:
            return now - self.since >= self.grace_s
        return False

    def round_end(self, end: float) -> float:
        """A round of asks ends at ``end``, or when the grace does (it seeds then)."""
        return end if self.since is None else min(end, self.since + self.grace_s)

    def heard(self, arriving: int, now: float) -> None:
        """The first seeder said it has received ``arriving`` bytes: a download that grows
        starts the grace again (a large object is worth more than the grace)."""
        if arriving > self.first_had:
            self.first_had, self.since = arriving, now


@dataclass(frozen=True)
class _Ask:
    """What one round of asks for an object works with: the object, the pull, the node's
    fill, the peers listed and the object's seeders among them, and this agent's standby."""

    ref: ObjectRef
    cache: ObjectCache
    pull: _Pull
    fill: _NodeFill
    peers: dict[str, Peer]
    seated: list[str]
    standby: _Standby


class _Role(enum.Enum):
    """What an agent that does not seed an object does for its node."""

    FILLS = "no seeder ranked before it runs on this node: the first to claim the fill asks peers"
    SEEDED = "a seeder ranked before it runs on this node and fills the node cache: wait for it"
    ALONE = "its node is unknown, or its seeder did not fill the node in time: ask the peers"


class _Node(enum.Enum):
    """What one round at the node cache said."""

    HAS_IT = "the object came from the node cache"
    FILLING = "another agent of the node fetches it: wait for its fill, ask no peer"
    ASK_PEERS = "the node cache lacks it: ask the peers"


@dataclass
class _NodeFill:
    """One object's way through the node cache (``client`` None: no node cache), and the fill
    lease this agent holds for it while it fetches it from peers for the node."""

    client: NodeCacheClient | None
    ref: ObjectRef
    lease: FillLease | None = None
    _keeper: LeaseKeeper | None = field(default=None, init=False)  # renews the lease

    def round(self, role: _Role, cache: ObjectCache, wait_s: float) -> _Node:
        """Take the object into ``cache`` if the node cache holds it now or once a fill under
        way lands within ``wait_s``; else, as this agent's ``role`` says, claim the node's
        fill lease (it then fetches for the node), or wait for the fill of another agent of
        the node, or ask the peers."""
        if self.lease is not None and role is _Role.SEEDED:
            # claimed on a listing from before the seeder was told to move: the seeder's own
            # download waits for this fill, so hand it over rather than ask the seeder for it
            self.abandon()
        if self.client is None or self.lease is not None:
            return _Node.ASK_PEERS
        staged = cache.staging_path(self.ref.digest)
        try:
            got = (
                self.client.claim(self.ref, staged, wait_s)
                if role is _Role.FILLS
                else self.client.take(self.ref, staged, wait_s)  # a peek: no lease
            )
            if isinstance(got, StagedHash):
                committed = cache.commit(self.ref.digest, staged, hashed=got) == self.ref.digest
                return _Node.HAS_IT if committed else _Node.ASK_PEERS
        finally:
            staged.unlink(missing_ok=True)
        if isinstance(got, FillLease):
            # renewed while this agent asks the peers, over as many rounds as that takes
            self.lease, self._keeper = got, LeaseKeeper(self.client, self.ref, got)
            return _Node.ASK_PEERS
        if role is _Role.FILLS and got is Claim.FILLING:
            return _Node.FILLING
        if role is _Role.SEEDED and got in (Claim.MISSING, Claim.FILLING):
            return _Node.FILLING  # the seeder's fill may not have started yet: no peer asked
        return _Node.ASK_PEERS

    def upload(self, cache: ObjectCache) -> None:
        """Give the node what this agent fetched for it (the object is in ``cache``)."""
        if self.client is not None and self.lease is not None:
            self._stop_renewing()
            self.client.upload(self.ref, self.lease, cache.path(self.ref.digest))
            self.lease = None

    def abandon(self) -> None:
        """This agent will not fetch it after all: the node's others stop waiting for it."""
        if self.client is not None and self.lease is not None:
            self._stop_renewing()
            self.client.abandon(self.ref, self.lease)
            self.lease = None

    def _stop_renewing(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
