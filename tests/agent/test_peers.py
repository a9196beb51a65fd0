"""Agents serving verified objects to their peers: real peer servers on loopback, real caches,
the real store of v1 -> v2 -> v3, and peers that misbehave (cut off mid-object, wrong bytes,
silent); the store counts what crossed the bucket link.

Every fetch ends with each object in the cache under its name with the right bytes, or the
object left to the store; nothing a peer sent is kept unless its sha256 is the name asked for.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.helpers import FAST_RETRY, MODEL, Published
from agent.test_node_cache import Daemon
from deltaroll.agent import pod_tokens
from deltaroll.agent.fetch import fetched_objects, plan_objects, prune_cache
from deltaroll.agent.metrics import AgentMetrics
from deltaroll.agent.peer_directory import Peer, PodPeers, peer_of
from deltaroll.agent.peer_fetch import PeerFetcher
from deltaroll.agent.peer_server import PeerServer
from deltaroll.agent.pod_tokens import REMEMBER_WITH_LIVE_CHECK_S, Refused, TokenAuthenticator
from deltaroll.agent.throttle import TokenBucket
from deltaroll.api.agent_access import POD_NAME_EXTRA, POD_UID_EXTRA
from deltaroll.api.annotations import POD_PEER_PORT
from deltaroll.api.peers import (
    ARRIVING_HEADER,
    AUDIENCE,
    MAX_WAIT_S,
    SEED_CANDIDATES,
    WAIT_HEADER,
    object_path,
    parse_object_path,
    parse_seed_among,
    parse_wait,
    rank,
    seed_among,
    seeders,
)
from deltaroll.store import Store, TransientStoreError
from deltaroll.store.backends import open_backend
from deltaroll.store.cache import file_sha256
from deltaroll.store.graph import Step
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import NodeCacheClient
from deltaroll.store.uri import parse_store_uri
from fixtures.polling import wait_for


class CountingBackend:
    """The store's real backend, counting each object key downloaded; ``down`` makes every
    call fail as an unreachable store does."""

    def __init__(self, uri: str) -> None:
        self.inner = open_backend(parse_store_uri(uri))
        self.downloads: Counter[str] = Counter()
        self.down = False
        self.lock = threading.Lock()

    def download_files(self, items: Sequence[tuple[str, Path]], **kw: Any) -> None:
        if self.down:
            raise TransientStoreError(self.inner.uri, "download", "the store is down (test)")
        with self.lock:
            self.downloads.update(key for key, _ in items)
        self.inner.download_files(items, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


TENANT = "tenant-a"


def review(body: Any) -> Any:
    """What kube-apiserver answers a TokenReview (the client's V1TokenReview shape): here a
    token ``<namespace>/<pod>`` is that pod's, for the peers' audience only."""
    namespace, _, pod = body.spec.token.partition("/")
    if not pod or body.spec.audiences != [AUDIENCE]:
        return SimpleNamespace(status=SimpleNamespace(authenticated=False, audiences=None))
    user = SimpleNamespace(
        username=f"system:serviceaccount:{namespace}:deltaroll-agent",
        extra={POD_NAME_EXTRA: [pod], POD_UID_EXTRA: [f"uid-{pod}"]},
    )
    return SimpleNamespace(
        status=SimpleNamespace(authenticated=True, audiences=body.spec.audiences, user=user)
    )


def replace_token(body: Any, token: str) -> Any:
    """The same TokenReview for another token (a review() the test vouches through)."""
    return SimpleNamespace(spec=SimpleNamespace(token=token, audiences=body.spec.audiences))


@dataclass
class StaticPeers:
    """A directory the test controls: the peers it lists are the live ones (None: the
    listing fails), its members the pods of the ModelDeployment."""

    peers: dict[str, Peer] | None
    members: dict[str, str] = field(default_factory=dict)  # name -> uid
    node: str | None = None

    def live(self) -> dict[str, Peer] | None:
        return None if self.peers is None else dict(self.peers)

    def own_node(self) -> str | None:
        return self.node

    def refresh(self) -> None:
        """Always current."""

    def member(self, name: str, uid: str) -> bool:
        return self.members.get(name) == uid


@dataclass
class Pod:
    name: str
    store: Store
    metrics: AgentMetrics
    server: PeerServer
    token: Path

    @property
    def peer(self) -> Peer:
        return Peer("127.0.0.1", self.server.port)

    def fetcher(self, directory: StaticPeers, **kw: Any) -> PeerFetcher:
        kw.setdefault("wait_s", 10.0)
        kw.setdefault("timeout_s", 2.0)
        return PeerFetcher(directory, self.name, MODEL, self.metrics, token_file=self.token, **kw)


@pytest.fixture
def backend(published: Published) -> CountingBackend:
    return CountingBackend(published.uri)


@pytest.fixture
def fleet() -> StaticPeers:
    """The pods of the ModelDeployment (every pod ``make_pod`` makes), as its servers see it."""
    return StaticPeers({})


@pytest.fixture
def make_pod(
    tmp_path: Path, published: Published, backend: CountingBackend, fleet: StaticPeers
) -> Iterator[Any]:
    servers: list[PeerServer] = []

    def make(name: str, *, rate: int = 0, max_peers: int = 4) -> Pod:
        store = Store(
            published.uri, cache_dir=tmp_path / name / "cache", retry=FAST_RETRY, backend=backend
        )
        metrics = AgentMetrics()
        server = PeerServer(
            "127.0.0.1", 0, model=MODEL, cache=store.cache, rate=rate, max_peers=max_peers,
            metrics=metrics,
            authenticator=TokenAuthenticator(
                review, AUDIENCE, remember_s=REMEMBER_WITH_LIVE_CHECK_S  # as the agent's
            ),
            namespace=TENANT, directory=fleet,
        )  # fmt: skip
        server.start()
        servers.append(server)
        fleet.members[name] = f"uid-{name}"  # as review() vouches for it
        token = tmp_path / name / "token"
        token.write_text(f"{TENANT}/{name}")
        return Pod(name, store, metrics, server, token)

    yield make
    for server in servers:
        server.stop()


def v2_steps(published: Published, store: Store) -> list[Step]:
    return store.plan(MODEL, published.ids["v2"], [published.ids["v1"]]).steps


def assert_all_verified(store: Store, refs: list[ObjectRef]) -> None:
    for ref in refs:
        assert file_sha256(store.cache.path(ref.digest)) == ref.digest


# ------------------------------------------------------------------ the contract


def test_every_agent_names_the_same_seeders_and_a_leaver_moves_only_its_own() -> None:
    names = [f"pod-{i}" for i in range(8)]
    digest = "ab" * 32
    assert seeders(digest, names) == seeders(digest, list(reversed(names)))
    assert len(seeders(digest, names)) == 2
    first, second = seeders(digest, names)
    without_first = [n for n in names if n != first]
    assert seeders(digest, without_first)[0] == second  # the survivor stays a seeder
    spread = Counter(rank(f"{i:064x}", names)[0] for i in range(400))
    assert len(spread) == 8 and min(spread.values()) > 20  # seeding spreads over the fleet


def test_the_operator_names_a_few_seeders_and_an_agent_reads_back_only_pod_names() -> None:
    moved = [f"llm-{i}" for i in range(50)]
    named = parse_seed_among(seed_among("v2", reversed(moved)))
    assert named == parse_seed_among(seed_among("v2", moved)) and len(named) == SEED_CANDIDATES
    # at most SEED_CANDIDATES entries read, whatever the value holds; only pod names kept
    assert parse_seed_among(" a, b ,a,,Not_A_Pod,../x," + ",".join(moved)) == (
        "a", "b", *moved[:SEED_CANDIDATES - 6]
    )  # fmt: skip
    assert parse_seed_among("") == ()


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/{MODEL}/objects/{'ab' * 32}?x=1",
        f"/v1/models/../objects/{'ab' * 32}",
        f"/v1/models/{MODEL}/objects/{'AB' * 32}",
        f"/v1/models/{MODEL}/objects/{'ab' * 31}",
        "/metrics",
    ],
)
def test_the_peer_route_takes_one_model_and_one_digest(path: str) -> None:
    assert parse_object_path(path) is None
    assert parse_object_path(object_path(MODEL, "ab" * 32)) == (MODEL, "ab" * 32)


def pod_json(
    name: str,
    port: Any = "8082",
    ip: Any = "10.0.0.7",
    phase: str = "Running",
    node: Any = None,
    **annotations: Any,
) -> dict[str, Any]:
    """A pod as the API server's JSON has it, serving peers on ``port`` (scheduled to
    ``node``, if any)."""
    meta = {"name": name, "uid": f"uid-{name}", "annotations": {POD_PEER_PORT: port, **annotations}}
    pod = {"metadata": meta, "status": {"phase": phase, "podIP": ip}}
    return pod if node is None else pod | {"spec": {"nodeName": node}}


class Listing:
    """What the client's list_namespaced_pod returns with _preload_content=False: the body."""

    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()
        self.released = False

    def release_conn(self) -> None:
        self.released = True


def pod_list(pods: Sequence[dict[str, Any]]) -> Listing:
    return Listing({"kind": "PodList", "apiVersion": "v1", "items": list(pods)})


def test_a_pod_is_a_peer_only_running_with_an_address_and_a_port() -> None:
    assert peer_of(pod_json("p")) == Peer("10.0.0.7", 8082)
    assert peer_of(pod_json("p", phase="Pending")) is None
    assert peer_of(pod_json("p", ip=None)) is None
    assert peer_of(pod_json("p", ip="10.0.0.7:80")) is None
    assert peer_of(pod_json("p", ip=["10.0.0.7"])) is None
    assert peer_of(pod_json("p", port="70000")) is None
    assert peer_of(pod_json("p", port="-1")) is None
    assert peer_of(pod_json("p", port=8082)) is None  # annotations are strings
    assert peer_of(pod_json("p", port="8²")) is None  # a digit to str.isdigit, not to int()
    assert peer_of(pod_json("p", port="0" * 5000 + "80")) is None  # int() refuses 4,300+ digits
    assert peer_of(pod_json("p", ip=167772161)) is None  # 10.0.0.1 to ip_address(), not JSON's
    assert peer_of({"metadata": {"name": "p", "annotations": ["x"]}, "status": "Running"}) is None


def test_the_token_bucket_holds_every_caller_together_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.take(500)  # 5000 bytes: the first second's burst, then 4 s of waiting
    assert sum(slept) == pytest.approx(4.0)
    assert TokenBucket(0, sleep=sleep).take(10**9) is None and sum(slept) == pytest.approx(4.0)


# ------------------------------------------------------------------ the server


def test_the_server_serves_only_verified_objects_of_its_model(
    published: Published, make_pod: Any
) -> None:
    seeder = make_pod("seeder")
    refs = plan_objects(v2_steps(published, seeder.store))
    with fetched_objects(seeder.store, MODEL, v2_steps(published, seeder.store)):
        pass
    ref = refs[0]

    def get(path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", seeder.server.port, timeout=5)
        connection.request("GET", path, headers={"Authorization": f"Bearer {TENANT}/seeder"})
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body

    status, body = get(object_path(MODEL, ref.digest))
    assert status == 200 and len(body) == ref.size
    assert get(object_path("another-model", ref.digest))[0] == 404
    assert get(object_path(MODEL, "0" * 64))[0] == 404
    assert get("/v1/models/tiny/objects/../../etc/passwd")[0] == 404
    # bytes that went bad on its disk are not served (and not kept)
    seeder.store.cache.path(ref.digest).write_bytes(b"rot" + body[3:])
    assert get(object_path(MODEL, ref.digest))[0] == 404
    assert not seeder.store.cache.has(ref.digest)
    assert seeder.metrics.served_bytes._value.get() == ref.size


def test_the_server_says_how_much_of_an_object_it_is_fetching_has_arrived(
    published: Published, make_pod: Any
) -> None:
    seeder = make_pod("seeder")
    ref = plan_objects(v2_steps(published, seeder.store))[0]

    def ask() -> tuple[int, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", seeder.server.port, timeout=5)
        headers = {"Authorization": f"Bearer {TENANT}/seeder", WAIT_HEADER: "0.1"}
        connection.request("GET", object_path(MODEL, ref.digest), headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status, response.getheader(ARRIVING_HEADER)

    assert ask() == (404, None)  # not fetching it
    seeder.store.cache.staging_path(ref.digest).write_bytes(b"x" * 1000)  # a download under way
    assert ask() == (404, "1000")


def test_the_server_turns_away_peers_beyond_its_limit(published: Published, make_pod: Any) -> None:
    seeder = make_pod("busy", rate=1, max_peers=1)  # one byte per second: the first GET lasts
    ref = max(plan_objects(v2_steps(published, seeder.store)), key=lambda r: r.size)
    with fetched_objects(seeder.store, MODEL, v2_steps(published, seeder.store)):
        pass
    first = socket.create_connection(("127.0.0.1", seeder.server.port))
    first.sendall(
        f"GET {object_path(MODEL, ref.digest)} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TENANT}/busy\r\n\r\n".encode()
    )
    assert first.recv(12).startswith(b"HTTP/1.1 200")
    connection = http.client.HTTPConnection("127.0.0.1", seeder.server.port, timeout=5)
    connection.request(
        "GET", object_path(MODEL, ref.digest), headers={"Authorization": f"Bearer {TENANT}/busy"}
    )
    response = connection.getresponse()
    assert response.status == 503 and response.getheader("Retry-After") == "1"
    connection.close()
    first.close()


# ------------------------------------------------------------------ a fleet


def test_four_pods_fetch_each_object_from_the_bucket_once_when_no_seeder_fails(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """The first seeder of each object fetches it; the standby asks it instead of fetching it
    too (both fetched at once before: every object crossed the bucket link twice)."""
    pods = [make_pod(f"pod-{i}") for i in range(4)]
    directory = {pod.name: pod.peer for pod in pods}
    moved: dict[str, Any] = {}

    def pull(pod: Pod) -> None:
        others = StaticPeers({n: p for n, p in directory.items() if n != pod.name})
        steps = v2_steps(published, pod.store)
        fetcher = pod.fetcher(others, standby_grace_s=30.0)  # nothing fails: never runs out
        with fetched_objects(pod.store, MODEL, steps, peers=fetcher) as result:
            moved[pod.name] = result
            assert_all_verified(pod.store, plan_objects(steps))

    threads = [threading.Thread(target=pull, args=(pod,)) for pod in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    refs = plan_objects(v2_steps(published, pods[0].store))
    assert len(moved) == 4
    assert set(backend.downloads.values()) == {1}
    assert len(backend.downloads) == len(refs)
    total = sum(ref.size for ref in refs)
    assert sum(m.bucket_bytes for m in moved.values()) == total
    assert sum(m.peer_bytes for m in moved.values()) == 3 * total
    assert sum(pod.metrics.served_bytes._value.get() for pod in pods) == sum(
        pod.metrics.peer_bytes._value.get() for pod in pods
    )


# ------------------------------------------------------------------ faults


class _BadPeer(BaseHTTPRequestHandler):
    """A peer that answers 200 for every object with the wrong bytes or half of them."""

    server: Any
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        size = self.server.sizes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.server.mode == "corrupt":
            self.wfile.write(b"\x00" * size)
        else:  # killed mid-transfer: half the bytes, then the connection drops
            self.wfile.write(b"\x00" * (size // 2))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        self.server.served += 1

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def bad_peer(mode: str, refs: list[ObjectRef]) -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _BadPeer)
    server.daemon_threads = True
    server.mode, server.served = mode, 0
    server.sizes = {object_path(MODEL, ref.digest): ref.size for ref in refs}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def holding(
    published: Published, make_pod: Any, *names: str
) -> tuple[list[Pod], list[Step], list[ObjectRef]]:
    """Pods that hold every object of v1 -> v2: (the pods, the steps, the objects)."""
    holders = [make_pod(name) for name in names]
    steps = v2_steps(published, holders[0].store)
    for holder in holders:
        with fetched_objects(holder.store, MODEL, steps):
            pass
    return holders, steps, plan_objects(steps)


def leecher_name(digests: list[str], others: list[str], count: int) -> str:
    """A pod name that seeds none of ``digests`` among ``others`` (so it asks the peers).
    Each try succeeds with the product over the digests of the chance to rank below every
    other: about 1 in 1,300 for one pair of objects seen, so search far (found in milliseconds)."""
    for i in range(1_000_000):
        name = f"leecher-{i}"
        if all(name not in seeders(d, [*others, name], count) for d in digests):
            return name
    raise AssertionError("no such name")


def test_a_peer_serving_wrong_bytes_poisons_nothing(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    probe = make_pod("probe")
    refs = plan_objects(v2_steps(published, probe.store))
    pod = make_pod(leecher_name([r.digest for r in refs], ["evil"], 1))
    with bad_peer("corrupt", refs) as evil:
        fetcher = pod.fetcher(StaticPeers({"evil": Peer("127.0.0.1", evil.server_port)}),
                              seeders=1, wait_s=0.5)  # fmt: skip
        with fetched_objects(pod.store, MODEL, v2_steps(published, pod.store), peers=fetcher) as m:
            assert m.peer_bytes == 0 and m.bucket_bytes == sum(r.size for r in refs)
    # Distrusted after its first wrong object: objects already asked of it at that moment were
    # asked once each, the rest never.
    assert 1 <= evil.served <= len(refs)
    assert pod.metrics.peer_rejected._value.get() == evil.served
    assert_all_verified(pod.store, refs)
    assert not list(pod.store.cache.partial.iterdir())  # nothing of the peer's bytes left


def test_a_seeder_killed_mid_transfer_leaves_the_object_to_the_other_seeder(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    (good,), steps, refs = holding(published, make_pod, "good")
    backend.downloads.clear()
    name = leecher_name([r.digest for r in refs], ["dying", "good"], 2)
    pod = make_pod(name)
    with bad_peer("truncate", refs) as dying:
        directory = StaticPeers({"dying": Peer("127.0.0.1", dying.server_port), "good": good.peer})
        with fetched_objects(pod.store, MODEL, steps, peers=pod.fetcher(directory)) as moved:
            assert moved.bucket_bytes == 0 and moved.peer_bytes == sum(r.size for r in refs)
    assert not backend.downloads
    assert pod.metrics.peer_rejected._value.get() == 0  # cut off is not lying
    assert_all_verified(pod.store, refs)


def standby_name(digests: list[str], first: str) -> str:
    """A pod name that ranks second, after ``first``, for every one of ``digests``."""
    for i in range(1_000_000):
        name = f"standby-{i}"
        if all(seeders(d, [first, name], 2) == [first, name] for d in digests):
            return name
    raise AssertionError("no such name")


def test_a_standby_seeder_fetches_at_once_when_the_first_seeder_dies_mid_transfer(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """The standby asks the first seeder; cut off mid-object, it fetches from the bucket then
    and there, not after its grace (every pod that waited on the two would wait it out too)."""
    probe = make_pod("probe")
    refs = plan_objects(v2_steps(published, probe.store))
    pod = make_pod(standby_name([r.digest for r in refs], "dying"))
    backend.downloads.clear()
    with bad_peer("truncate", refs) as dying:
        directory = StaticPeers({"dying": Peer("127.0.0.1", dying.server_port, "v2")})
        fetcher = pod.fetcher(directory, standby_grace_s=60.0, wait_s=60.0)
        steps = v2_steps(published, pod.store)
        with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
            assert moved.bucket_objects == len(refs) and moved.peer_bytes == 0
        assert dying.served == len(refs)  # asked once per object, not again and again
    assert set(backend.downloads.values()) == {1}
    assert_all_verified(pod.store, refs)


class _SlowSeeder(BaseHTTPRequestHandler):
    """A first seeder whose download of each object takes a few requests: until then it answers
    404 saying how much has arrived, a little more each time."""

    server: Any
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = self.server.objects[self.path]
        asked = self.server.asked[self.path] = self.server.asked.get(self.path, 0) + 1
        time.sleep(0.2)  # the wait the standby asked for, cut short
        if asked <= 6:
            self.send_response(404)
            self.send_header(ARRIVING_HEADER, str(asked * len(body) // 7))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def test_a_standby_waits_past_its_grace_while_the_first_seeders_download_grows(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """A large object takes its first seeder longer than the standby's grace; the standby, told
    on each ask how much has arrived, waits while that grows instead of fetching it too (a full
    snapshot crossed the bucket link twice in a 64-pod run)."""
    (holder,), steps, refs = holding(published, make_pod, "holder")
    objects = {
        object_path(MODEL, r.digest): holder.store.cache.path(r.digest).read_bytes() for r in refs
    }
    pod = make_pod(standby_name([r.digest for r in refs], "first"))
    backend.downloads.clear()
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _SlowSeeder)
    server.daemon_threads, server.objects, server.asked = True, objects, {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        directory = StaticPeers({"first": Peer("127.0.0.1", server.server_port, "v2")})
        fetcher = pod.fetcher(directory, standby_grace_s=0.5, wait_s=30.0)
        with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
            assert (moved.bucket_objects, moved.peer_bytes) == (0, sum(r.size for r in refs))
    finally:
        server.shutdown()
        server.server_close()
    assert not backend.downloads
    assert_all_verified(pod.store, refs)


def test_two_standbys_of_a_seeder_that_died_each_fetch_their_object_at_once(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """The first seeder of both objects dies; one pod stands by for the first object, the other
    for the second, and each waits for the other's object from the other. Each must download
    its own at once, not after its attempt at the peers is over for every object (then each
    waited for the other until its deadline, and both downloaded both)."""
    probe = make_pod("probe")
    refs = plan_objects(v2_steps(published, probe.store))
    assert len(refs) == 2
    first_b, first_c = (r.digest for r in refs)
    b_name, c_name = next(
        (f"b-{i}", f"c-{i}")
        for i in range(100_000)
        if rank(first_b, ["dying", f"b-{i}", f"c-{i}"])[:2] == ["dying", f"b-{i}"]
        and rank(first_c, ["dying", f"b-{i}", f"c-{i}"])[:2] == ["dying", f"c-{i}"]
    )
    b, c = make_pod(b_name), make_pod(c_name)
    backend.downloads.clear()
    moved: dict[str, Any] = {}
    with bad_peer("truncate", refs) as dying:

        def pull(who: Pod, other: Pod) -> None:
            directory = StaticPeers(
                {
                    "dying": Peer("127.0.0.1", dying.server_port, "v2"),
                    other.name: Peer("127.0.0.1", other.server.port, "v2"),
                }
            )
            fetcher = who.fetcher(directory, standby_grace_s=60.0, wait_s=20.0)
            steps = v2_steps(published, who.store)
            with fetched_objects(who.store, MODEL, steps, peers=fetcher, wanted="v2") as result:
                moved[who.name] = result

        threads = [threading.Thread(target=pull, args=pair) for pair in ((b, c), (c, b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    sizes = {r.digest: r.size for r in refs}
    assert set(backend.downloads.values()) == {1}  # each object once, by its standby
    assert (moved[b.name].bucket_objects, moved[b.name].peer_bytes) == (1, sizes[first_c])
    assert (moved[c.name].bucket_objects, moved[c.name].peer_bytes) == (1, sizes[first_b])
    assert_all_verified(b.store, refs)
    assert_all_verified(c.store, refs)


def test_a_standby_seeder_fetches_once_the_first_seeder_is_slower_than_its_grace(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """A first seeder that is alive but never gets the object (its bucket is slow, it noticed
    its annotation late) holds the standby for the grace only."""
    first = make_pod("first")
    refs = plan_objects(v2_steps(published, first.store))
    pod = make_pod(standby_name([r.digest for r in refs], "first"))
    directory = StaticPeers({"first": Peer("127.0.0.1", first.server.port, "v2")})
    fetcher = pod.fetcher(directory, standby_grace_s=0.5, wait_s=60.0)
    steps = v2_steps(published, pod.store)
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
        assert moved.bucket_objects == len(refs) and moved.peer_bytes == 0
    assert answered(first) >= len(refs)  # it was asked first
    assert_all_verified(pod.store, refs)


def test_with_every_seeder_gone_the_object_comes_from_the_bucket(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    probe = make_pod("probe")
    refs = plan_objects(v2_steps(published, probe.store))
    name = leecher_name([r.digest for r in refs], ["a", "b"], 2)
    pod = make_pod(name)
    with bad_peer("truncate", refs) as dying:
        gone = Peer("127.0.0.1", dying.server_port)
        fetcher = pod.fetcher(StaticPeers({"a": gone, "b": gone}), wait_s=0.5)
        with fetched_objects(pod.store, MODEL, v2_steps(published, pod.store), peers=fetcher) as m:
            assert m.peer_bytes == 0 and m.bucket_objects == len(refs) == m.unpeered_objects
    assert_all_verified(pod.store, refs)


def test_an_agent_that_lists_no_peer_seeds_everything_and_says_so(
    published: Published, make_pod: Any
) -> None:
    """A failed or empty peer listing is the intended fallback: every object from the store,
    each counted as one that peers did not serve (what an operator reads off the metrics)."""
    pod = make_pod("alone")
    steps = v2_steps(published, pod.store)
    with fetched_objects(pod.store, MODEL, steps, peers=pod.fetcher(StaticPeers({}))) as m:
        assert m.bucket_objects == m.unpeered_objects == len(plan_objects(steps)) > 0
    assert_all_verified(pod.store, plan_objects(steps))


def test_with_the_store_down_the_objects_come_from_peers_that_hold_them(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    holders, steps, refs = holding(published, make_pod, "holder-0", "holder-1")
    name = leecher_name([r.digest for r in refs], [h.name for h in holders], 2)
    pod = make_pod(name)
    backend.down = True
    directory = StaticPeers({h.name: h.peer for h in holders})
    with fetched_objects(pod.store, MODEL, steps, peers=pod.fetcher(directory)) as moved:
        assert moved.peer_bytes == sum(r.size for r in refs) and moved.bucket_bytes == 0
    assert_all_verified(pod.store, refs)
    # and a pod that must seed waits on the store instead of taking anything unverified
    seeder = make_pod(holders[0].name + "-twin")
    alone = seeder.fetcher(StaticPeers({}))
    with (
        pytest.raises(TransientStoreError),
        fetched_objects(seeder.store, MODEL, steps, peers=alone),
    ):
        pass
    assert not any(seeder.store.cache.has(r.digest) for r in refs)


def test_a_non_seeder_takes_what_its_node_cache_holds_before_asking_peers(
    published: Published, make_pod: Any, backend: CountingBackend, tmp_path: Path
) -> None:
    """Bytes already on the node cross no link: neither a peer's nor the bucket's."""
    holders = [make_pod("holder-0"), make_pod("holder-1")]
    steps = v2_steps(published, holders[0].store)
    refs = plan_objects(steps)
    with Daemon(tmp_path / "node", fill_ttl_s=30.0) as daemon:

        def on_node(token: str) -> NodeCacheClient:
            (tmp_path / token).write_text(token)
            return NodeCacheClient(daemon.url, tmp_path / token, published.uri)

        bucket_objects = []
        for holder, token in zip(holders, ("tok-a1", "tok-a2"), strict=True):
            with fetched_objects(holder.store, MODEL, steps, node_cache=on_node(token)) as m:
                bucket_objects.append(m.bucket_objects)
        assert bucket_objects == [len(refs), 0]  # the second got them all from the node
        downloads = backend.downloads.copy()
        pod = make_pod(leecher_name([r.digest for r in refs], [h.name for h in holders], 2))
        directory = StaticPeers({h.name: h.peer for h in holders})  # both would serve it
        node_cache = on_node("tok-a3")
        with fetched_objects(
            pod.store, MODEL, steps, peers=pod.fetcher(directory), node_cache=node_cache
        ) as moved:
            assert (moved.peer_bytes, moved.bucket_bytes) == (0, 0)
        assert node_cache.node_bytes == sum(r.size for r in refs)
        assert backend.downloads == downloads
        assert_all_verified(pod.store, refs)


@pytest.mark.parametrize(
    ("serve_rate_s", "fill_ttl_s"),
    [(0.0, 30.0), (5.0, 1.0)],
    ids=["fast-peer", "peer-slower-than-the-fill-lease"],
)
def test_a_node_takes_each_object_from_the_peers_once_and_its_pods_share_it(
    published: Published,
    make_pod: Any,
    backend: CountingBackend,
    tmp_path: Path,
    serve_rate_s: float,
    fill_ttl_s: float,
) -> None:
    """Move each byte once, per node too: three pods of one node pull what a pod of another
    node serves. The first to claim the node cache's fill lease fetches each object from the
    peer and uploads it; the node's other pods wait for that fill instead of each crossing the
    node's link (on main each of them fetched every object from the peer: 3x the bytes). A
    peer that serves at a fifth of the objects' size a second takes the filler several times
    the lease's length: the filler renews it, so the node's others still wait (without the
    renewals they took the lapsed fills over and fetched the objects again)."""
    (holder,), steps, refs = holding(published, make_pod, "holder")
    if serve_rate_s:
        holder.server.bucket = TokenBucket(int(sum(ref.size for ref in refs) / serve_rate_s))
    backend.downloads.clear()
    v2_id = steps[-1].target
    # every pod of the node ranks above the holder: the filler would ask each of them first
    # (and wait at each for the fill it is itself making) unless it skips its node's pods
    above = (
        name
        for name in (f"node1-{i}" for i in range(10_000))
        if all(rank(r.digest, ["holder", name])[0] == name for r in refs)
    )
    pods = [make_pod(next(above)) for _ in range(3)]
    on_node1 = {p.name: Peer("127.0.0.1", p.server.port, "v2", None, "node-1") for p in pods}
    serving = Peer("127.0.0.1", holder.server.port, "v2", v2_id, "node-0")
    moved: dict[str, Any] = {}
    with Daemon(tmp_path / "node-1", fill_ttl_s=fill_ttl_s) as daemon:

        def pull(pod: Pod, token: str) -> None:
            (tmp_path / token).write_text(token)
            node_cache = NodeCacheClient(daemon.url, tmp_path / token, published.uri)
            others = {n: p for n, p in on_node1.items() if n != pod.name} | {"holder": serving}
            # a slow peer's one block of the larger object comes after seconds: no timeout
            fetcher = pod.fetcher(StaticPeers(others, node="node-1"), timeout_s=10.0)
            with fetched_objects(
                pod.store, MODEL, steps, peers=fetcher, wanted="v2", node_cache=node_cache
            ) as result:
                moved[pod.name] = (result, node_cache.node_bytes)

        threads = [
            threading.Thread(target=pull, args=(pod, f"tok-a{i + 1}")) for i, pod in enumerate(pods)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    total = sum(ref.size for ref in refs)
    assert len(moved) == 3 and not backend.downloads
    assert sum(result.peer_bytes for result, _ in moved.values()) == total  # once for the node
    assert sum(node_bytes for _, node_bytes in moved.values()) == 2 * total
    assert holder.metrics.served_bytes._value.get() == total
    for pod in pods:
        assert_all_verified(pod.store, refs)
        assert answered(pod) == 0  # no pod of the node was asked for what it waited for


def answered(pod: Pod) -> float:
    """Requests the pod's peer server answered, whatever the answer."""
    return sum(
        sample.value
        for metric in pod.metrics.peer_requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_a_pod_leaves_its_nodes_fill_to_the_seeder_on_its_node(
    published: Published, make_pod: Any, backend: CountingBackend, tmp_path: Path
) -> None:
    """The seeder fills the node cache from the bucket; a pod of the same node that asked
    first must not claim that fill for a fetch from the peers (it would wait at the seeder
    while the seeder waits for its fill, until its own deadline sent it to the bucket too),
    nor take the object from the seeder as a peer: it waits for the seeder's fill."""
    seeder = make_pod("seeder")
    steps = v2_steps(published, seeder.store)
    refs = plan_objects(steps)
    pod = make_pod(leecher_name([r.digest for r in refs], ["seeder"], 1))
    peer = {p.name: Peer("127.0.0.1", p.server.port, "v2", None, "node-1") for p in (seeder, pod)}
    moved: dict[str, Any] = {}
    asked = threading.Event()

    class Watched(NodeCacheClient):
        """The pod's client: says when the pod has asked its node cache (a lease, had it
        claimed one, would be its own from then on)."""

        def take(self, *args: Any, **kw: Any) -> Any:
            try:
                return super().take(*args, **kw)
            finally:
                asked.set()

        def claim(self, *args: Any, **kw: Any) -> Any:
            try:
                return super().claim(*args, **kw)
            finally:
                asked.set()

    with Daemon(tmp_path / "node-1", fill_ttl_s=30.0) as daemon:

        def pull(who: Pod, other: Pod, token: str) -> None:
            (tmp_path / token).write_text(token)
            client = Watched if who is pod else NodeCacheClient
            node_cache = client(daemon.url, tmp_path / token, published.uri)
            directory = StaticPeers({other.name: peer[other.name]}, node="node-1")
            fetcher = who.fetcher(directory, seeders=1)
            with fetched_objects(
                who.store, MODEL, steps, peers=fetcher, wanted="v2", node_cache=node_cache
            ) as result:
                moved[who.name] = (result, node_cache.node_bytes)

        first = threading.Thread(target=pull, args=(pod, seeder, "tok-a1"))
        first.start()
        assert asked.wait(10)
        then = threading.Thread(target=pull, args=(seeder, pod, "tok-a2"))
        then.start()
        for thread in (first, then):
            thread.join(60)
    (leecher, from_node), (seeded, _) = moved[pod.name], moved[seeder.name]
    assert (leecher.bucket_bytes, leecher.peer_bytes) == (0, 0)
    assert from_node == sum(ref.size for ref in refs)
    assert seeded.bucket_objects == len(refs)
    assert set(backend.downloads.values()) == {1}
    assert_all_verified(pod.store, refs)


def test_a_seeder_that_does_not_fill_its_node_is_asked_after_a_grace(
    published: Published, make_pod: Any, backend: CountingBackend, tmp_path: Path
) -> None:
    """A pod waits for its node's seeder to fill the node cache, but not for ever: a seeder
    that holds the objects already (an earlier pull, a fill evicted) fills nothing, so after
    the grace the pod asks the peers, the seeder first, rather than wait out its deadline."""
    (seeder,), steps, refs = holding(published, make_pod, "seeder")
    backend.downloads.clear()
    pod = make_pod(leecher_name([r.digest for r in refs], ["seeder"], 1))
    pulling = Peer("127.0.0.1", seeder.server.port, "v2", None, "node-1")
    with Daemon(tmp_path / "node-1", fill_ttl_s=30.0) as daemon:
        (tmp_path / "tok-a1").write_text("tok-a1")
        node_cache = NodeCacheClient(daemon.url, tmp_path / "tok-a1", published.uri)
        fetcher = pod.fetcher(
            StaticPeers({"seeder": pulling}, node="node-1"), seeders=1, seeder_grace_s=0.3
        )
        with fetched_objects(
            pod.store, MODEL, steps, peers=fetcher, wanted="v2", node_cache=node_cache
        ) as moved:
            assert (moved.bucket_bytes, moved.peer_bytes) == (0, sum(r.size for r in refs))
    assert not backend.downloads
    assert_all_verified(pod.store, refs)


def test_a_fill_claimed_before_the_seeder_was_told_to_move_is_handed_to_it(
    published: Published, make_pod: Any, backend: CountingBackend, tmp_path: Path
) -> None:
    """The operator tells the pods one PATCH at a time: a pod that listed before the seeder of
    its node was told claims the node's fill for a fetch from the peers, and the seeder's own
    download then waits on that fill. The pod hands the fill over once its listing shows the
    seeder pulling (before, both waited until the pod's deadline sent it to the bucket), and
    reads its listing again after one round's wait, not after waiting at every pulling peer in
    turn (in a 64-pod fleet that walk outlasted the 30 s deadline, and the seeder with it)."""
    probe = make_pod("probe")
    refs = plan_objects(v2_steps(published, probe.store))
    digests = [r.digest for r in refs]
    # other nodes' pods, pulling: none will hold the objects in time
    fars = [make_pod(f"far-{i}") for i in range(5)]
    far_names = [far.name for far in fars]
    pod = make_pod(leecher_name(digests, far_names, 1))
    seeder = make_pod(
        next(
            name
            for name in (f"seeder-{i}" for i in range(100_000))
            if all(seeders(d, [*far_names, name, pod.name], 1) == [name] for d in digests)
        )
    )
    steps = v2_steps(published, pod.store)
    far_peers = {far.name: Peer("127.0.0.1", far.server.port, "v2", None, "node-0") for far in fars}
    told = Peer("127.0.0.1", seeder.server.port, "v2", None, "node-1")
    pod_view = StaticPeers({**far_peers, seeder.name: replace(told, wants="v1")}, node="node-1")
    seeder_view = StaticPeers(
        {**far_peers, pod.name: Peer("127.0.0.1", pod.server.port, "v2", None, "node-1")},
        node="node-1",
    )
    moved: dict[str, Any] = {}
    with Daemon(tmp_path / "node-1", fill_ttl_s=60.0) as daemon:

        def pull(who: Pod, view: StaticPeers, token: str) -> None:
            (tmp_path / token).write_text(token)
            node_cache = NodeCacheClient(daemon.url, tmp_path / token, published.uri)
            fetcher = who.fetcher(view, seeders=1, wait_s=30.0)  # the fault waits it out
            with fetched_objects(
                who.store, MODEL, steps, peers=fetcher, wanted="v2", node_cache=node_cache
            ) as result:
                moved[who.name] = result

        first = threading.Thread(target=pull, args=(pod, pod_view, "tok-a1"))
        first.start()
        wait_for(
            lambda: daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") > 0,
            timeout=10,
        )
        assert pod_view.peers is not None
        pod_view.peers[seeder.name] = told  # the operator's PATCH reaches the seeder
        then = threading.Thread(target=pull, args=(seeder, seeder_view, "tok-a2"))
        then.start()
        for thread in (first, then):
            thread.join(60)
    assert moved[pod.name].bucket_bytes == 0
    assert moved[seeder.name].bucket_objects == len(refs)
    assert set(backend.downloads.values()) == {1}
    assert_all_verified(pod.store, refs)
    # one waited request per object per round while it held the fill: a far peer or two each
    assert sum(answered(far) for far in fars) <= 2 * len(refs)


def test_an_agent_serving_peers_keeps_the_snapshot_it_applied_for_pods_that_start_later(
    published: Published, make_pod: Any
) -> None:
    pod = make_pod("first")
    plan = pod.store.plan(MODEL, published.ids["v1"], [])
    anchors = plan_objects(s for s in plan.steps if s.kind == "anchor")
    assert anchors
    with fetched_objects(pod.store, MODEL, plan.steps):
        pass
    kept = prune_cache(pod.store, plan, frozenset(), keep_anchors=True)
    assert all(pod.store.cache.has(ref.digest) for ref in anchors)
    prune_cache(pod.store, plan, kept)  # without peers the snapshot is not worth its disk
    assert not any(pod.store.cache.has(ref.digest) for ref in anchors)


# ------------------------------------------------------------------ who may ask


def test_attack_only_pods_of_the_same_namespace_and_deployment_get_an_object(
    published: Published, make_pod: Any
) -> None:
    """Any pod that reaches a peer port and knows a digest used to get the object, from any
    namespace: now only a pod the API server vouches for, of this ModelDeployment."""
    seeder = make_pod("seeder")
    make_pod("member")
    with fetched_objects(seeder.store, MODEL, v2_steps(published, seeder.store)):
        pass
    ref = plan_objects(v2_steps(published, seeder.store))[0]

    def get(token: str | None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", seeder.server.port, timeout=5)
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        connection.request("GET", object_path(MODEL, ref.digest), headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body

    assert get(None)[0] == 401
    assert get("")[0] == 401
    status, reason = get("tenant-b/member")  # another namespace, even under a member's name
    assert status == 403 and b"namespace tenant-a only" in reason
    status, reason = get(f"{TENANT}/other-deployment")  # same namespace, not of the selector
    assert status == 403 and b"own ModelDeployment" in reason
    assert get("forged")[0] == 403  # the API server does not vouch for it
    assert seeder.metrics.served_bytes._value.get() == 0
    assert seeder.metrics.peer_refused._value.get() == 5
    status, body = get(f"{TENANT}/member")
    assert status == 200 and len(body) == ref.size


def test_attack_a_deleted_pods_remembered_token_opens_nothing_when_a_new_pod_takes_its_name(
    published: Published, make_pod: Any, fleet: StaticPeers
) -> None:
    """A review is remembered for minutes (one per token, not one per pull): the pod it
    vouched for must still exist, by UID, for each request, or a token taken from a deleted
    pod (a StatefulSet names its replacement the same) would fetch weights until it expires."""
    seeder = make_pod("seeder")
    make_pod("member")
    with fetched_objects(seeder.store, MODEL, v2_steps(published, seeder.store)):
        pass
    ref = plan_objects(v2_steps(published, seeder.store))[0]
    reviews: list[str] = []
    seeder.server.authenticator = TokenAuthenticator(
        lambda body: reviews.append(body.spec.token) or review(body),
        AUDIENCE,
        remember_s=REMEMBER_WITH_LIVE_CHECK_S,
    )

    def get() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", seeder.server.port, timeout=5)
        headers = {"Authorization": f"Bearer {TENANT}/member"}  # review() says uid-member
        connection.request("GET", object_path(MODEL, ref.digest), headers=headers)
        status = connection.getresponse().status
        connection.close()
        return status

    assert get() == 200
    fleet.members["member"] = "uid-of-the-replacement"  # deleted; a new pod took the name
    assert get() == 403
    del fleet.members["member"]  # deleted, not replaced
    assert get() == 403
    assert reviews == [f"{TENANT}/member"]  # refused on the remembered answer
    assert seeder.metrics.served_bytes._value.get() == ref.size


def test_requests_that_arrive_while_their_token_is_reviewed_wait_for_that_review() -> None:
    """A pull asks a peer for several objects at once: one TokenReview answers them all."""
    reviews: list[str] = []
    under_review, answer = threading.Event(), threading.Event()

    def slow_review(body: Any) -> Any:
        reviews.append(body.spec.token)
        under_review.set()
        answer.wait(10)
        return review(body)

    authenticator = TokenAuthenticator(slow_review, AUDIENCE)
    with ThreadPoolExecutor(6) as pool:
        asked = [pool.submit(authenticator.check, f"{TENANT}/member") for _ in range(6)]
        assert under_review.wait(10)
        time.sleep(0.2)  # the other five arrive while the first is under review
        answer.set()
        assert {future.result().pod_uid for future in asked} == {"uid-member"}
    assert reviews == [f"{TENANT}/member"]


def test_a_review_that_failed_answers_its_waiters_and_is_not_remembered() -> None:
    from kubernetes.client.exceptions import ApiException

    down = [True]
    under_review, answer = threading.Event(), threading.Event()

    def flaky_review(body: Any) -> Any:
        under_review.set()
        answer.wait(10)
        if down[0]:
            raise ApiException(status=503)
        return review(body)

    authenticator = TokenAuthenticator(flaky_review, AUDIENCE)
    with ThreadPoolExecutor(4) as pool:
        asked = [pool.submit(authenticator.check, f"{TENANT}/member") for _ in range(4)]
        assert under_review.wait(10)
        time.sleep(0.2)  # the other three wait on the failing review
        answer.set()
        for future in asked:
            with pytest.raises(Refused, match="could not be reviewed"):
                future.result(timeout=10)
    down[0] = False
    assert authenticator.check(f"{TENANT}/member").pod_name == "member"


def test_a_review_that_hangs_refuses_its_waiters_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pod_tokens, "REVIEW_TIMEOUT_S", 0.3)
    release = threading.Event()

    def hanging_review(body: Any) -> Any:
        release.wait(10)
        return review(body)

    authenticator = TokenAuthenticator(hanging_review, AUDIENCE)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(authenticator.check, f"{TENANT}/member")
        time.sleep(0.1)
        with pytest.raises(Refused, match="did not finish in time"):
            authenticator.check(f"{TENANT}/member")
        release.set()
        assert first.result(timeout=10).pod_name == "member"


def test_a_review_is_remembered_for_as_long_as_the_server_asks() -> None:
    reviews: list[float] = []
    now = [0.0]

    def counting_review(body: Any) -> Any:
        reviews.append(now[0])
        return review(body)

    authenticator = TokenAuthenticator(
        counting_review, AUDIENCE, remember_s=120.0, clock=lambda: now[0]
    )
    for now[0] in (0.0, 60.0, 119.0, 121.0, 200.0):
        authenticator.check(f"{TENANT}/member")
    assert reviews == [0.0, 121.0]
    reviews.clear()
    for now[0] in (300.0, 329.0, 331.0):  # a refusal: 30 s at most, whatever the server asks
        with pytest.raises(Refused):
            authenticator.check("forged")
    assert reviews == [300.0, 331.0]


def test_a_review_is_not_remembered_past_the_tokens_expiry() -> None:
    reviews: list[float] = []
    now = [0.0]

    def vouching_review(body: Any) -> Any:
        reviews.append(now[0])
        return review(replace_token(body, f"{TENANT}/member"))

    def jwt(claims: dict[str, Any]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJSUzI1NiJ9.{payload}.signature"

    authenticator = TokenAuthenticator(
        vouching_review, AUDIENCE, remember_s=120.0, clock=lambda: now[0]
    )
    expiring = jwt({"exp": int(time.time()) + 50})
    for now[0] in (0.0, 40.0, 60.0):
        authenticator.check(expiring)
    assert reviews == [0.0, 60.0]  # at 60 s it had expired (the API server says so, not us)
    reviews.clear()
    for token in (jwt({"exp": "soon"}), jwt({}), "not.a-jwt!.x", "plain"):
        for now[0] in (1000.0, 1100.0):  # no expiry to read: remember_s
            authenticator.check(token)
    assert reviews == [1000.0] * 4


def test_a_pod_refused_by_its_peers_gets_the_objects_from_the_bucket(
    published: Published, make_pod: Any, fleet: StaticPeers
) -> None:
    (holder,), steps, refs = holding(published, make_pod, "holder")
    name = leecher_name([r.digest for r in refs], ["holder"], 1)
    outsider = make_pod(name)
    del fleet.members[name]  # not (or no longer) a pod of the deployment
    fetcher = outsider.fetcher(StaticPeers({"holder": holder.peer}), seeders=1, wait_s=0.5)
    with fetched_objects(outsider.store, MODEL, steps, peers=fetcher) as moved:
        assert moved.peer_bytes == 0 and moved.bucket_objects == len(refs)
    assert holder.metrics.served_bytes._value.get() == 0
    assert_all_verified(outsider.store, refs)


# ------------------------------------------------------------------ who seeds


def test_pods_pulling_a_version_seed_among_themselves_not_waiting_for_idle_ones(
    published: Published, make_pod: Any
) -> None:
    """A canary step: two pods stay on v1, one is told v2. It ranks only among pods told v2
    (itself), so it seeds every object at once instead of waiting for idle pods to fetch."""
    idle = [make_pod("idle-0"), make_pod("idle-1")]
    pod = make_pod("canary")
    steps = v2_steps(published, pod.store)
    refs = plan_objects(steps)
    directory = StaticPeers({p.name: Peer("127.0.0.1", p.server.port, wants="v1") for p in idle})

    def no_waiting(_: float) -> None:
        raise AssertionError("the canary waited for pods that do not pull v2")

    fetcher = pod.fetcher(directory, sleep=no_waiting)
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
        assert moved.bucket_objects == len(refs) and moved.peer_bytes == 0
    assert all(fetcher.seeds(r.digest, "v2") for r in refs)
    everyone = ["idle-0", "idle-1", "canary"]  # without a version: ranked among all pods
    assert [fetcher.seeds(r.digest, None) for r in refs] == [
        seeders(r.digest, everyone)[0] == "canary" for r in refs
    ]


def test_agents_that_see_part_of_a_patch_round_seed_among_the_pods_it_named(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """The operator tells 64 pods one PATCH at a time over seconds: an agent that lists the
    pods early sees few of them told, and ranked first among those it fetched the object too
    (a 64-pod run's delta crossed the bucket link three times). With the pods the round named
    it ranks among the same pods as every other agent: here it asks the first seeder, which
    its listing does not yet show as told."""
    probe = make_pod("probe")
    digests = [r.digest for r in plan_objects(v2_steps(published, probe.store))]
    first, told_name, pod_name = next(
        (f"first-{i}", f"told-{i}", f"pod-{i}")
        for i in range(100_000)
        if all(
            rank(d, [f"first-{i}", f"told-{i}", "other", f"pod-{i}"])[0] == f"first-{i}"
            and rank(d, [f"pod-{i}", f"told-{i}"])[0] == f"pod-{i}"
            for d in digests
        )
    )
    (holder,), steps, refs = holding(published, make_pod, first)
    told, other = make_pod(told_name), make_pod("other")
    backend.downloads.clear()
    pod = make_pod(pod_name)
    view = StaticPeers(
        {
            holder.name: Peer("127.0.0.1", holder.server.port, "v1"),  # not patched yet
            told.name: Peer("127.0.0.1", told.server.port, "v2"),
            other.name: Peer("127.0.0.1", other.server.port, "v1"),  # not patched yet
        }
    )
    named = (first, told_name, "other", pod_name)
    fetcher = pod.fetcher(view)
    # without the names it would seed both objects: first among the two it sees told
    assert [fetcher.seeds(d, "v2") for d in digests] == [True] * len(digests)
    with fetched_objects(
        pod.store, MODEL, steps, peers=fetcher, wanted="v2", seed_among=named
    ) as moved:
        assert (moved.bucket_bytes, moved.peer_bytes) == (0, sum(r.size for r in refs))
    assert not backend.downloads
    assert_all_verified(pod.store, refs)


def test_once_a_pod_serves_the_version_the_next_step_takes_it_from_there_not_the_bucket(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """The canary's next step: the canary serves v2, one more pod is told v2. Ranked among the
    two, the newcomer would seed some objects from the bucket although the canary holds them
    all; a pod that serves the version makes seeding needless (the demo's 50 % step pulled the
    whole delta from the bucket again). As on a cluster, the operator tells pods the version's
    name and agents report the id they serve: the check compared the id with the name, so it
    never held, and the demo's later pods seeded at random."""
    (canary,), steps, refs = holding(published, make_pod, "canary")
    backend.downloads.clear()
    pod = make_pod("next")
    assert all("next" in seeders(r.digest, ["canary", "next"]) for r in refs)  # would seed all
    v2_id = steps[-1].target
    assert v2_id == published.ids["v2"] != "v2"
    directory = StaticPeers({"canary": Peer("127.0.0.1", canary.server.port, "v2", v2_id)})
    fetcher = pod.fetcher(directory)
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
        assert moved.bucket_objects == 0 and moved.peer_bytes == sum(r.size for r in refs)
    assert not backend.downloads  # nothing from the bucket
    assert not any(fetcher.seeds(r.digest, "v2", v2_id) for r in refs)
    assert_all_verified(pod.store, refs)


def test_pods_that_serve_the_version_are_asked_before_pulling_pods_ranked_above_them(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """A canary's later step: one pod serves the version, others still pull it. A round of asks
    waits 2 s in all; were the pulling pods ranked above the holder asked first, each would
    take the round holding the request, and the holder would never be asked."""
    (holder,), steps, refs = holding(published, make_pod, "holder")
    digests = [r.digest for r in refs]
    a_name, b_name = next(
        (f"a-{i}", f"b-{i}")
        for i in range(100_000)
        if all(rank(d, [f"a-{i}", f"b-{i}", "holder"])[2] == "holder" for d in digests)
    )
    pulling = [make_pod(a_name), make_pod(b_name)]
    backend.downloads.clear()
    pod = make_pod("next")
    v2_id = steps[-1].target
    directory = StaticPeers(
        {"holder": Peer("127.0.0.1", holder.server.port, "v2", v2_id)}
        | {p.name: Peer("127.0.0.1", p.server.port, "v2") for p in pulling}
    )
    fetcher = pod.fetcher(directory, wait_s=6.0)
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
        assert (moved.bucket_objects, moved.peer_bytes) == (0, sum(r.size for r in refs))
    assert not backend.downloads
    assert [answered(p) for p in pulling] == [0, 0]  # the holder first
    assert_all_verified(pod.store, refs)


def test_a_pod_that_serves_the_version_without_an_object_is_asked_once_then_seeded_around(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """A pod can serve the version without holding what this pull needs: it got there another
    way (a rescheduled canary from an anchor), or its annotation lies. Trusting the annotation
    alone, nobody would seed and every pod would wait out ``wait_s`` per object; now each pod
    asks it once per object and, finding it lacks the object, ranks without it and seeds."""
    elsewhere = make_pod("elsewhere")  # serves v2 by its annotation, holds nothing
    pod = make_pod("next")
    steps = v2_steps(published, pod.store)
    refs = plan_objects(steps)
    v2_id = steps[-1].target
    directory = StaticPeers({"elsewhere": Peer("127.0.0.1", elsewhere.server.port, "v2", v2_id)})
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 2 * len(refs):
            raise AssertionError("the pod kept waiting for a peer that lacks the object")

    fetcher = pod.fetcher(directory, sleep=sleep)
    assert not any(fetcher.seeds(r.digest, "v2", v2_id) for r in refs)  # it should hold them
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
        assert moved.bucket_objects == len(refs) and moved.peer_bytes == 0
    assert sum(backend.downloads.values()) == len(refs)  # each object once, from the bucket
    assert_all_verified(pod.store, refs)


def test_a_non_seeder_asks_a_serving_pod_that_lacks_the_object_once_then_the_seeder(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    """Past a pod that serves the version but lacks the object (asked first, it ranks first),
    a pod that is no seeder goes on to the seeder that holds it: it asks the lacking pod once,
    not again and again until ``wait_s`` is over and the bucket."""
    (seeder,), steps, refs = holding(published, make_pod, "holder-0")
    digests = [r.digest for r in refs]
    lacking_name = next(
        name
        for name in (f"elsewhere-{i}" for i in range(1_000_000))
        if all(rank(d, [name, "holder-0"])[0] == name for d in digests)
    )
    lacking = make_pod(lacking_name)  # serves v2 by its annotation, holds nothing
    backend.downloads.clear()
    pod = make_pod(leecher_name(digests, ["holder-0"], 1))
    v2_id = steps[-1].target
    directory = StaticPeers(
        {
            lacking_name: Peer("127.0.0.1", lacking.server.port, "v2", v2_id),
            "holder-0": Peer("127.0.0.1", seeder.server.port, "v2"),  # still reports pulling
        }
    )
    fetcher = pod.fetcher(directory, seeders=1)
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as moved:
        assert moved.bucket_objects == 0 and moved.peer_bytes == sum(r.size for r in refs)
    assert not backend.downloads
    assert lacking.metrics.peer_requests.labels("missing")._value.get() == len(refs)  # once each


def test_a_non_seeder_waits_at_a_pulling_peer_and_gets_each_object_when_it_lands(
    published: Published, make_pod: Any, backend: CountingBackend, fleet: StaticPeers
) -> None:
    """While the seeder fetches, the others do not poll it (in a fleet every poll is a
    connection, a token check and a 404 from each pod, on the CPUs the fetch needs): each
    object is asked for once, and the answer comes as the seeder commits it."""
    seeder = make_pod("seeder")
    steps = v2_steps(published, seeder.store)
    refs = plan_objects(steps)
    pod = make_pod(leecher_name([r.digest for r in refs], ["seeder"], 1))
    asked: list[str] = []
    member = fleet.member
    fleet.member = lambda name, uid: asked.append(name) or member(name, uid)  # type: ignore[method-assign]
    fetcher = pod.fetcher(StaticPeers({"seeder": Peer("127.0.0.1", seeder.server.port, "v2")}),
                          seeders=1)  # fmt: skip
    moved: list[Any] = []

    def pull() -> None:
        with fetched_objects(pod.store, MODEL, steps, peers=fetcher, wanted="v2") as result:
            moved.append(result)

    puller = threading.Thread(target=pull)
    puller.start()
    wait_for(lambda: len(asked) == len(refs), timeout=4, what="the pod asked for each object")
    puller.join(1.0)  # the seeder is slow to start: a poll every 0.25 s would ask again
    assert puller.is_alive() and asked == [pod.name] * len(refs)
    with fetched_objects(seeder.store, MODEL, steps, peers=seeder.fetcher(StaticPeers({}))):
        pass
    puller.join(10)
    assert moved and moved[0].peer_bytes == sum(r.size for r in refs)
    assert moved[0].bucket_bytes == 0 and set(backend.downloads.values()) == {1}
    # one request per object (a second if the first's wait ran out first), no polling
    assert len(asked) <= 2 * len(refs)
    assert seeder.metrics.peer_requests.labels("served")._value.get() == len(refs)
    assert_all_verified(pod.store, refs)


def test_a_wait_that_is_not_a_number_of_seconds_is_refused_by_name(
    published: Published, make_pod: Any
) -> None:
    seeder = make_pod("seeder")
    ref = plan_objects(v2_steps(published, seeder.store))[0]

    def get(wait: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", seeder.server.port, timeout=5)
        headers = {"Authorization": f"Bearer {TENANT}/seeder", WAIT_HEADER: wait}
        connection.request("GET", object_path(MODEL, ref.digest), headers=headers)
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        return response.status, body

    for wait in ("nan", "inf", "-1", "soon"):
        status, body = get(wait)
        assert status == 400 and WAIT_HEADER in body, wait
    assert get("0.1")[0] == 404  # not held, and still not after the wait
    assert parse_wait("1e9") == MAX_WAIT_S and parse_wait(None) == 0.0


def test_a_failed_peer_listing_waits_for_the_peers_instead_of_seeding_everything(
    published: Published, make_pod: Any, backend: CountingBackend
) -> None:
    holders, steps, refs = holding(published, make_pod, "holder-0", "holder-1")
    backend.downloads.clear()
    pod = make_pod(leecher_name([r.digest for r in refs], [h.name for h in holders], 2))

    class Flaky(StaticPeers):
        """The API server fails the first listings, then answers."""

        failures = 3

        def live(self) -> dict[str, Peer] | None:
            self.failures -= 1
            return None if self.failures >= 0 else super().live()

    directory = Flaky({h.name: h.peer for h in holders})
    fetcher = pod.fetcher(directory, sleep=lambda _: None)
    with fetched_objects(pod.store, MODEL, steps, peers=fetcher) as moved:
        assert moved.peer_bytes == sum(r.size for r in refs)
    assert not backend.downloads  # before, a failed listing made the pod seed everything
    assert_all_verified(pod.store, refs)


def test_the_pod_listing_stands_a_while_when_the_api_fails_and_finds_new_members() -> None:
    from kubernetes.client.exceptions import ApiException

    def pod(name: str) -> dict[str, Any]:
        return pod_json(name, **{"deltaroll.dev/version": "v2"})

    class Api:
        pods = [pod("me"), pod("a")]
        down = False
        calls = 0

        def list_namespaced_pod(self, *_: Any, **__: Any) -> Listing:
            self.calls += 1
            if self.down:
                raise ApiException(status=503)
            return pod_list(self.pods)

    now = [0.0]
    api = Api()
    directory = PodPeers(
        api, TENANT, "app=x", "me", refresh_s=2, stale_s=60, clock=lambda: now[0],
        in_background=lambda work: work(),  # at once: the calls can be counted
    )  # fmt: skip
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v2")}
    api.down = True
    now[0] = 30.0
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v2")}  # the last good one stands
    now[0] = 61.0
    assert directory.live() is None  # too old: unknown, not "alone"
    api.down = False
    api.pods.append(pod("new"))
    now[0] = 61.6
    assert directory.member("new", "uid-new")  # listed again at once for a caller it does not know
    calls = api.calls
    assert not directory.member("stranger", "uid-stranger") and api.calls == calls  # < 0.5 s ago
    now[0] = 62.2
    assert not directory.member("new", "uid-of-a-deleted-pod-named-new")  # its name, not its pod


def test_an_old_listing_answers_at_once_while_the_next_is_fetched() -> None:
    """An agent waiting for its objects asks who its peers are every round: a slow API
    server answers that from the last listing instead of holding up the round; only a pull's
    first listing, and a caller the listing does not know, are waited for."""
    version = ["v1"]
    answer = threading.Event()

    class Api:
        calls = 0

        def list_namespaced_pod(self, *_: Any, **__: Any) -> Listing:
            self.calls += 1
            if self.calls > 1:
                answer.wait(5)  # a loaded API server
            return pod_list([pod_json("a", **{"deltaroll.dev/version": version[0]})])

    now = [0.0]
    api = Api()
    directory = PodPeers(api, TENANT, "app=x", "me", refresh_s=2, clock=lambda: now[0])
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v1")}  # the first: waited for
    version[0] = "v2"
    now[0] = 3.0
    started = time.monotonic()
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v1")}  # at once, not in 5 s
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v1")}
    assert time.monotonic() - started < 1.0
    now[0] = 6.0
    directory.live()
    assert api.calls == 2  # one list behind at a time
    answer.set()
    wait_for(lambda: directory.live() == {"a": Peer("10.0.0.7", 8082, "v2")}, what="the new one")
    version[0] = "v3"
    directory.refresh()  # a pull starts: waited for
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v3")}


def test_a_caller_that_started_since_the_listing_is_served_while_a_list_runs_behind() -> None:
    """The peer server waits for a listing that may name a caller it does not know, even while
    a list for the agent's own rounds is still under way in the background."""
    pods = [pod_json("a")]

    class Api:
        def list_namespaced_pod(self, *_: Any, **__: Any) -> Listing:
            return pod_list(pods)

    now = [0.0]
    behind: list[Any] = []  # lists started in the background, never finished
    directory = PodPeers(
        Api(), TENANT, "app=x", "me", refresh_s=2, clock=lambda: now[0],
        in_background=behind.append,
    )  # fmt: skip
    assert directory.member("a", "uid-a")
    pods.append(pod_json("new"))
    now[0] = 3.0
    assert directory.member("new", "uid-new")
    assert len(behind) == 1  # started by the check of the known listing, not waited for


def test_a_background_list_that_hangs_or_never_starts_is_not_waited_on_for_good() -> None:
    """A list behind that never returns (a body that trickles) would leave the agent on an old
    listing until it is stale_s old; a thread that could not start would never be retried."""
    from deltaroll.agent.peer_directory import LIST_TIMEOUT_S

    class Api:
        calls = 0

        def list_namespaced_pod(self, *_: Any, **__: Any) -> Listing:
            self.calls += 1
            return pod_list([pod_json("a", **{"deltaroll.dev/version": f"v{self.calls}"})])

    now = [0.0]
    starts: list[Any] = []

    def start(work: Any) -> None:
        starts.append(work)
        if len(starts) == 1:
            raise RuntimeError("can't start new thread")
        # the second never runs: a list that hangs

    api = Api()
    directory = PodPeers(
        api, TENANT, "app=x", "me", refresh_s=2, stale_s=600, clock=lambda: now[0],
        in_background=start,
    )  # fmt: skip
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v1")}
    now[0] = 3.0
    with pytest.raises(RuntimeError):
        directory.live()
    now[0] = 6.0
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v1")}  # started again, hangs
    assert len(starts) == 2
    now[0] = 6.0 + 2 * LIST_TIMEOUT_S + 1
    assert directory.live() == {"a": Peer("10.0.0.7", 8082, "v2")}  # waited for, not behind
    assert len(starts) == 2 and api.calls == 2


def test_a_listing_that_is_not_a_pod_list_counts_as_a_failed_one() -> None:
    """The API server's answer is read as JSON, so it is checked like any input: a body that is
    not a PodList leaves the last good listing standing, and every response is released."""
    bodies: list[Any] = [
        {"items": [pod_json("me"), pod_json("a")]},
        {"items": [{"metadata": {"name": 7}}]},
        {"items": "pods"},
        ["not", "a", "list"],
    ]
    given: list[Listing] = []

    class Api:
        def list_namespaced_pod(self, *_: Any, **kwargs: Any) -> Listing:
            assert kwargs["_preload_content"] is False  # JSON, not the client's models
            given.append(Listing(bodies.pop(0)))
            return given[-1]

    now = [0.0]
    directory = PodPeers(
        Api(), TENANT, "app=x", "me", refresh_s=1, clock=lambda: now[0],
        in_background=lambda work: work(),
    )  # fmt: skip
    for _ in range(4):
        assert directory.live() == {"a": Peer("10.0.0.7", 8082)}
        now[0] += 1
    assert all(response.released for response in given) and len(given) == 4


def test_the_listing_says_which_node_each_pod_and_this_agent_run_on() -> None:
    """Pods of one node share its node cache: the listing carries spec.nodeName, checked like
    any input (a node that is not a string is no node)."""
    pods = [pod_json("me", node="n1"), pod_json("a", node="n1"), pod_json("b", node=["n1"])]

    class Api:
        def list_namespaced_pod(self, *_: Any, **__: Any) -> Listing:
            return pod_list([*pods, pod_json("c")])

    directory = PodPeers(Api(), TENANT, "app=x", "me", clock=lambda: 0.0)
    assert directory.own_node() == "n1"
    assert {name: peer.node for name, peer in (directory.live() or {}).items()} == {
        "a": "n1",
        "b": None,
        "c": None,
    }


def test_a_pull_lists_the_peers_again_to_see_who_was_just_told_to_move() -> None:
    """The operator tells every pod of a step at once; a listing cached from before would show
    the others on the old version, and each pod would seed every object alone."""
    wants = {"a": "v1", "b": "v1"}

    class Api:
        def list_namespaced_pod(self, *_: Any, **__: Any) -> Listing:
            return pod_list([pod_json(n, **{"deltaroll.dev/version": v}) for n, v in wants.items()])

    directory = PodPeers(Api(), TENANT, "app=x", "me", refresh_s=60, clock=lambda: 0.0)
    fetcher = PeerFetcher(directory, "me", MODEL, AgentMetrics(), seeders=1)
    digests = [f"{i:064x}" for i in range(40)]
    assert all(fetcher.seeds(d, "v2") for d in digests)  # alone on v2 in this listing
    wants.update(a="v2", b="v2")
    directory.refresh()
    assert sum(bool(fetcher.seeds(d, "v2")) for d in digests) < 30  # one in three, roughly
