"""The node cache daemon and its client: one download per node, partitions from the token,
crashes and tampering. The daemon runs for real on loopback; TokenReview answers come from a
table here (the sandbox's real TokenReview is exercised by the sandbox test)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from deltaroll.agent.node_cache_budget import DiskBudget, Limits
from deltaroll.agent.node_cache_server import NodeCache, serve
from deltaroll.agent.pod_tokens import TokenAuthenticator
from deltaroll.api.node_cache import AUDIENCE, LEASE_HEADER, RENEW_SUFFIX, FillLease
from deltaroll.store import cache as cache_module
from deltaroll.store import keys
from deltaroll.store.backends import open_backend
from deltaroll.store.cache import ObjectCache, StagedHash
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import Claim, NodeCacheClient
from deltaroll.store.transfer import download_objects
from deltaroll.store.uri import parse_store_uri
from fixtures.ports import free_port

NODE = "node-1"
MODEL = "tiny"

# token -> (namespace, pod uid, node, audience ok)
TOKENS = {
    "tok-a1": ("tenant-a", "uid-a1", NODE, True),
    "tok-a2": ("tenant-a", "uid-a2", NODE, True),
    "tok-a3": ("tenant-a", "uid-a3", NODE, True),
    "tok-b1": ("tenant-b", "uid-b1", NODE, True),
    "tok-elsewhere": ("tenant-a", "uid-x", "node-2", True),
    "tok-api-audience": ("tenant-a", "uid-y", NODE, False),
}


def review(body: Any) -> Any:
    """What kube-apiserver answers (the kubernetes client's V1TokenReview shape)."""
    known = TOKENS.get(body.spec.token)
    if known is None or not known[3]:
        return SimpleNamespace(status=SimpleNamespace(authenticated=False, audiences=None))
    namespace, uid, node, _ = known
    user = SimpleNamespace(
        username=f"system:serviceaccount:{namespace}:agent",
        extra={
            "authentication.kubernetes.io/pod-name": [f"pod-{uid}"],
            "authentication.kubernetes.io/pod-uid": [uid],
            "authentication.kubernetes.io/node-name": [node],
        },
    )
    return SimpleNamespace(
        status=SimpleNamespace(authenticated=True, audiences=body.spec.audiences, user=user)
    )


class Daemon:
    def __init__(self, directory: Path, fill_ttl_s: float, max_bytes: int = 1 << 30, **kw: int):
        self.cache = NodeCache(
            directory,
            TokenAuthenticator(review, AUDIENCE, node_name=NODE),
            fill_ttl_s=fill_ttl_s,
            limits=Limits.of(max_bytes, **kw),
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await serve(self.cache, "127.0.0.1", self.port, self._stop)

    def metric(self, name: str, **labels: str) -> float:
        return self.cache.metrics.registry.get_sample_value(name, labels) or 0.0

    def __enter__(self) -> Daemon:
        self._thread.start()
        http = urllib3.PoolManager()
        for _ in range(200):
            try:
                if http.request("GET", f"{self.url}/healthz").status == 200:
                    return self
            except urllib3.exceptions.HTTPError:
                threading.Event().wait(0.02)
        raise RuntimeError("the node cache did not start")

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path / "node", fill_ttl_s=30.0) as running:
        yield running


class CountingStore:
    """A file:// store that counts what is downloaded from it, and can hold a download."""

    def __init__(self, root: Path) -> None:
        self.uri = f"file://{root}"
        self.backend = open_backend(parse_store_uri(self.uri))
        self.downloads: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self._lock = threading.Lock()
        original = self.backend.download_files

        def download_files(items: Any, *, progress: Any = None) -> None:
            with self._lock:
                self.downloads += [key for key, _ in items]
            self.started.set()
            assert self.hold.wait(30)
            original(items, progress=progress)

        self.backend.download_files = download_files  # type: ignore[method-assign]

    def put(self, data: bytes) -> ObjectRef:
        digest = hashlib.sha256(data).hexdigest()
        path = Path(self.uri[len("file://") :]) / keys.object_key(MODEL, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return ObjectRef(digest=digest, size=len(data))


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "bucket")


def agent_pull(
    tmp_path: Path,
    daemon: Daemon,
    store: CountingStore,
    token: str,
    refs: list[ObjectRef],
    **kw: Any,
) -> tuple[int, NodeCacheClient, ObjectCache]:
    """One agent's pull, with its own cache folder and token file; (store bytes, client, cache)."""
    home = tmp_path / token
    home.mkdir(exist_ok=True)
    (home / "token").write_text(token)
    client = NodeCacheClient(daemon.url, home / "token", store.uri, **kw)
    cache = ObjectCache(home / "cache")
    received = download_objects(store.backend, MODEL, refs, cache, node_cache=client)
    for ref in refs:
        assert hashlib.sha256(cache.path(ref.digest).read_bytes()).hexdigest() == ref.digest
    return received, client, cache


def test_agents_of_one_node_download_each_object_once(tmp_path, daemon, store):
    refs = [store.put(os.urandom(300_000 + i)) for i in range(3)]
    store.hold.clear()  # the first agent's downloads wait until all three agents asked
    results: dict[str, tuple[int, NodeCacheClient, ObjectCache]] = {}

    def pull(token: str) -> None:
        results[token] = agent_pull(tmp_path, daemon, store, token, refs)

    threads = [threading.Thread(target=pull, args=(t,)) for t in ("tok-a1", "tok-a2", "tok-a3")]
    for thread in threads:
        thread.start()
    assert store.started.wait(10)
    threading.Event().wait(0.5)  # the others are waiting on the fills now
    store.hold.set()
    for thread in threads:
        thread.join(30)
    assert sorted(store.downloads) == sorted(keys.object_key(MODEL, r.digest) for r in refs)
    total = sum(r.size for r in refs)
    assert sum(received for received, _, _ in results.values()) == total  # from the bucket
    assert sum(client.node_bytes for _, client, _ in results.values()) == 2 * total
    assert daemon.metric("deltaroll_node_cache_filled_objects_total") == 3
    assert daemon.metric("deltaroll_node_cache_served_bytes_total") == 2 * total


def test_another_tenant_never_gets_what_one_fetched(tmp_path, daemon, store):
    refs = [store.put(b"tenant a's weights" * 1000)]
    agent_pull(tmp_path, daemon, store, "tok-a1", refs)
    received, client, _ = agent_pull(tmp_path, daemon, store, "tok-b1", refs)
    # same store URI, same digest: tenant b still fetches it with its own credentials
    assert (received, client.node_bytes) == (refs[0].size, 0)
    assert len(store.downloads) == 2


@pytest.mark.parametrize("token", ["tok-elsewhere", "tok-api-audience", "unknown"])
def test_a_refused_token_falls_back_to_the_store(tmp_path, daemon, store, token):
    refs = [store.put(b"x" * 5000)]
    agent_pull(tmp_path, daemon, store, "tok-a1", refs)
    received, client, _ = agent_pull(tmp_path, daemon, store, token, refs)
    assert (received, client.node_bytes) == (refs[0].size, 0)
    assert daemon.metric("deltaroll_node_cache_refused_total", reason="unauthenticated") == 1


def test_an_agent_that_dies_mid_fill_does_not_wedge_the_others(tmp_path, store):
    ref = store.put(os.urandom(100_000))
    with Daemon(tmp_path / "node", fill_ttl_s=1.0) as daemon:
        http = urllib3.PoolManager()
        url = f"{daemon.url}/v1/objects/{ref.digest}?store={store.uri}&size={ref.size}"
        granted = http.request("GET", url, headers={"Authorization": "Bearer tok-a1"})
        assert granted.status == 404  # a1 holds the lease... and never comes back
        received, client, _ = agent_pull(tmp_path, daemon, store, "tok-a2", [ref], wait_s=20)
        assert (received, client.node_bytes) == (ref.size, 0)  # a2 took the next lease
        assert daemon.metric("deltaroll_node_cache_leases_total", outcome="expired") == 1
        # and filled it: a3 reads it from the node
        received, client, _ = agent_pull(tmp_path, daemon, store, "tok-a3", [ref])
        assert (received, client.node_bytes) == (0, ref.size)
        # a1's late renewal and upload with its dead lease are refused
        dead_lease = {"Authorization": "Bearer tok-a1", LEASE_HEADER: granted.json()["lease"]}
        renew_url = url.replace(ref.digest, ref.digest + RENEW_SUFFIX)
        assert http.request("POST", renew_url, headers=dead_lease).status == 409
        late = http.request("PUT", url, body=b"\0" * ref.size, headers=dead_lease)
        assert late.status == 409


def test_only_the_holder_renews_a_lease_and_a_renewed_one_outlives_its_ttl(tmp_path, store):
    ref = store.put(os.urandom(10_000))
    with Daemon(tmp_path / "node", fill_ttl_s=1.0) as daemon:
        http = urllib3.PoolManager()
        url = f"{daemon.url}/v1/objects/{ref.digest}?store={store.uri}&size={ref.size}"
        renew_url = url.replace(ref.digest, ref.digest + RENEW_SUFFIX)
        granted = http.request("GET", url, headers={"Authorization": "Bearer tok-a1"})
        lease = {LEASE_HEADER: granted.json()["lease"]}
        for _ in range(5):  # 2.5 s: two and a half leases' length
            threading.Event().wait(0.5)
            renewed = http.request(
                "POST", renew_url, headers={"Authorization": "Bearer tok-a1"} | lease
            )
            assert (renewed.status, renewed.json()["lease"]) == (200, lease[LEASE_HEADER])
        # a node-mate of the same tenant (with a1's lease id) and another tenant cannot renew it
        for token in ("tok-a2", "tok-b1"):
            stolen = http.request(
                "POST", renew_url, headers={"Authorization": f"Bearer {token}"} | lease
            )
            assert stolen.status == 409
        # and a2 still finds a1's fill under way: busy, no lease of its own
        waited = http.request("GET", f"{url}&wait=0", headers={"Authorization": "Bearer tok-a2"})
        assert waited.status == 409
        assert daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") == 1
        assert daemon.metric("deltaroll_node_cache_leases_total", outcome="expired") == 0


def test_an_upload_longer_than_the_lease_keeps_it_while_its_bytes_arrive(tmp_path, store):
    data = os.urandom(100_000)
    ref = store.put(data)
    with Daemon(tmp_path / "node", fill_ttl_s=1.0) as daemon:
        http = urllib3.PoolManager()
        url = f"{daemon.url}/v1/objects/{ref.digest}?store={store.uri}&size={ref.size}"
        granted = http.request("GET", url, headers={"Authorization": "Bearer tok-a1"})
        lease = {"Authorization": "Bearer tok-a1", LEASE_HEADER: granted.json()["lease"]}

        def slowly() -> Iterator[bytes]:  # 3 s: three leases' length, no renewal sent
            for start in range(0, len(data), 10_000):
                threading.Event().wait(0.3)
                yield data[start : start + 10_000]

        uploaded: list[int] = []
        upload = threading.Thread(
            target=lambda: uploaded.append(
                http.request(
                    "PUT", url, body=slowly(), headers=lease | {"Content-Length": str(len(data))}
                ).status
            )
        )
        upload.start()
        threading.Event().wait(2.0)
        during = http.request("GET", f"{url}&wait=0", headers={"Authorization": "Bearer tok-a2"})
        upload.join(10)
        assert (during.status, uploaded) == (409, [201])  # busy: no second lease mid-upload
        assert daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") == 1


def test_a_renewal_gives_up_only_when_the_node_cache_says_the_lease_is_not_its(
    tmp_path, daemon, store
):
    """A renewal that fails on the way (the daemon restarting, a timeout) is tried again at
    the next interval; only a 409 ends the renewals (one failed request used to end them)."""
    ref = store.put(os.urandom(1_000))
    (tmp_path / "token").write_text("tok-a1")
    someone_elses = FillLease(lease="0" * 32, ttl_s=1.0)
    unreachable = NodeCacheClient(f"http://127.0.0.1:{free_port()}", tmp_path / "token", store.uri)
    assert unreachable.renew(ref, someone_elses, timeout_s=1.0) is True
    reachable = NodeCacheClient(daemon.url, tmp_path / "token", store.uri)
    assert reachable.renew(ref, someone_elses, timeout_s=1.0) is False


def test_a_download_longer_than_its_lease_keeps_it_while_its_agent_lives(tmp_path, store):
    """The lease is short so that a crashed agent's fill passes on soon (above); a live agent
    renews it while it downloads, so the node's others wait for its fill however long the
    download takes (without renewals a2 took the lapsed fill over and downloaded it too)."""
    ref = store.put(os.urandom(200_000))
    store.hold.clear()
    pulled: dict[str, tuple[int, NodeCacheClient, ObjectCache]] = {}

    def pull(token: str) -> None:
        pulled[token] = agent_pull(tmp_path, daemon, store, token, [ref], wait_s=20)

    with Daemon(tmp_path / "node", fill_ttl_s=1.0) as daemon:
        first = threading.Thread(target=pull, args=("tok-a1",))
        first.start()
        assert store.started.wait(10)  # a1 holds the lease and downloads...
        second = threading.Thread(target=pull, args=("tok-a2",))
        second.start()
        threading.Event().wait(3.0)  # ...for three leases' length, a2 waiting on its fill
        store.hold.set()
        for thread in (first, second):
            thread.join(30)
        assert store.downloads == [keys.object_key(MODEL, ref.digest)]
        received, client, _ = pulled["tok-a2"]
        assert (received, client.node_bytes) == (0, ref.size)
        assert daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") == 1
        assert daemon.metric("deltaroll_node_cache_leases_total", outcome="filled") == 1


def test_bytes_that_are_not_the_object_never_enter_the_cache(tmp_path, daemon, store):
    ref = store.put(os.urandom(50_000))
    http = urllib3.PoolManager()
    url = f"{daemon.url}/v1/objects/{ref.digest}?store={store.uri}&size={ref.size}"
    granted = http.request("GET", url, headers={"Authorization": "Bearer tok-a1"})
    lease = granted.json()["lease"]
    forged = http.request(
        "PUT",
        url,
        body=b"\0" * ref.size,
        headers={"Authorization": "Bearer tok-a1", LEASE_HEADER: lease},
    )
    assert forged.status == 422
    received, client, _ = agent_pull(tmp_path, daemon, store, "tok-a2", [ref])
    assert (received, client.node_bytes) == (ref.size, 0)


def test_a_tampered_cache_file_is_refused_on_read(tmp_path, daemon, store):
    ref = store.put(os.urandom(80_000))
    agent_pull(tmp_path, daemon, store, "tok-a1", [ref])
    (cached,) = [p for p in (tmp_path / "node").rglob(ref.digest) if ".partial" not in p.parts]
    data = bytearray(cached.read_bytes())
    data[1000] ^= 0xFF
    cached.write_bytes(bytes(data))
    received, client, cache = agent_pull(tmp_path, daemon, store, "tok-a2", [ref])
    assert (received, client.node_bytes) == (ref.size, 0)  # refused, fetched from the store
    assert daemon.metric("deltaroll_node_cache_served_bytes_total") == 0
    # and the node cache holds the right bytes again, from a2's fill
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == ref.digest


def test_the_least_recently_used_objects_go_to_keep_the_disk_budget(tmp_path, store):
    first, second, third = (store.put(os.urandom(40_000)) for _ in range(3))
    one_tenant = {"max_bytes": 100_000, "namespace": 100_000, "object": 100_000}
    with Daemon(tmp_path / "node", fill_ttl_s=30.0, **one_tenant) as daemon:
        agent_pull(tmp_path, daemon, store, "tok-a1", [first])
        agent_pull(tmp_path, daemon, store, "tok-a1", [second])
        agent_pull(tmp_path, daemon, store, "tok-a2", [first])  # read: second is now the oldest
        agent_pull(tmp_path, daemon, store, "tok-a1", [third])  # 120 kB > 100 kB: one goes
        kept = {p.name for p in (tmp_path / "node").glob("*/*/*") if len(p.name) == 64}
        assert kept == {first.digest, third.digest}
        assert daemon.metric("deltaroll_node_cache_evicted_objects_total") == 1
        # an object larger than the whole budget is refused, and the agent fetches it itself
        big = store.put(os.urandom(150_000))
        received, client, _ = agent_pull(tmp_path, daemon, store, "tok-a3", [big])
        assert (received, client.node_bytes) == (big.size, 0)
    # a restarted daemon knows what it holds (oldest first) and keeps to the budget; objects of
    # the layout before namespace folders (<partition>/<sha256>), which no budget counts, go
    old = tmp_path / "node" / ("ab" * 16) / first.digest
    old.parent.mkdir()
    old.write_bytes(b"x" * 1000)
    with Daemon(tmp_path / "node", fill_ttl_s=30.0, **one_tenant) as daemon:
        assert daemon.cache.budget.total == 80_000
        assert not old.exists()


def test_attack_a_tenant_filling_the_cache_evicts_no_other_tenants_object(tmp_path, store):
    """Tenant b uploads bytes of its own choosing (any bytes are "the object" of their own
    digest) until the node's budget overflows: tenant a's object must stay cached."""
    theirs = store.put(os.urandom(40_000))
    with Daemon(tmp_path / "node", fill_ttl_s=30.0, max_bytes=100_000, object=40_000) as daemon:
        agent_pull(tmp_path, daemon, store, "tok-a1", [theirs])
        for _ in range(5):
            agent_pull(tmp_path, daemon, store, "tok-b1", [store.put(os.urandom(40_000))])
        received, client, _ = agent_pull(tmp_path, daemon, store, "tok-a2", [theirs])
        assert (received, client.node_bytes) == (0, theirs.size)
        assert daemon.cache.budget.held("tenant-b") <= 50_000  # half the node, by default
        # an object over the cap is refused up front: the agent fetches it itself
        big = store.put(os.urandom(40_001))
        received, client, _ = agent_pull(tmp_path, daemon, store, "tok-b1", [big])
        assert (received, client.node_bytes) == (big.size, 0)
        assert daemon.metric("deltaroll_node_cache_refused_total", reason="too_large") == 1


def test_when_the_node_is_full_the_namespace_holding_the_most_gives_way(tmp_path: Path) -> None:
    budget = DiskBudget(tmp_path, Limits.of(100, namespace=70, object=30))

    def add(namespace: str, name: str, size: int = 30) -> list[str]:
        path = tmp_path / namespace / "p" / (name * 64)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        return [p.name[0] for p in budget.added(namespace, path, size)]

    assert add("a", "1") + add("a", "2") + add("b", "3") == []  # 90 of 100
    assert add("b", "4") == ["3"]  # 120: a and b hold as much: the filler's own goes
    assert add("a", "5") == ["1"]  # a over its 70: only a's own go
    assert add("c", "6", 20) == ["2"]  # 110: a holds the most (60 vs 30, 20)
    assert (budget.held("a"), budget.held("b"), budget.held("c"), budget.total) == (30, 30, 20, 80)


def peeking_agent(
    tmp_path: Path, daemon: Daemon, store: CountingStore
) -> tuple[NodeCacheClient, ObjectCache]:
    """A non-seeder's node cache client and own cache (token tok-a1)."""
    home = tmp_path / "peek"
    home.mkdir()
    (home / "token").write_text("tok-a1")
    return NodeCacheClient(daemon.url, home / "token", store.uri), ObjectCache(home / "cache")


def test_a_peek_takes_no_lease_and_a_hit_is_hashed_once_by_the_agent(
    tmp_path, daemon, store, monkeypatch
):
    """A non-seeder peeks at its node cache on every poll: a miss must not take (and drop) a
    fill lease each time. A hit is hashed by the agent as it arrives, and not again on commit;
    the daemon sends a file it hashed when it entered without hashing it again."""
    ref = store.put(os.urandom(70_000))
    client, cache = peeking_agent(tmp_path, daemon, store)
    assert client.take(ref, cache.staging_path(ref.digest)) is Claim.MISSING
    assert daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") == 0
    agent_pull(tmp_path, daemon, store, "tok-a2", [ref])  # a2 fills it: one lease
    assert daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") == 1
    files_hashed = []
    real = cache_module._sha256
    monkeypatch.setattr(cache_module, "_sha256", lambda fd: files_hashed.append(fd) or real(fd))
    staged = cache.staging_path(ref.digest)
    hashed = client.take(ref, staged)
    assert (
        isinstance(hashed, StagedHash)
        and cache.commit(ref.digest, staged, hashed=hashed) == ref.digest
    )
    assert files_hashed == []
    assert daemon.metric("deltaroll_node_cache_served_bytes_total") == ref.size


def test_a_peek_waits_for_a_fill_under_way_and_gets_the_object_as_it_lands(tmp_path, daemon, store):
    """A non-seeder whose node is filling the object takes it as the fill lands, not after
    polling (each poll answered 409 at once, the CPU going to the polls); a peek with no fill
    under way still answers at once, with no lease taken."""
    ref = store.put(os.urandom(120_000))
    client, cache = peeking_agent(tmp_path, daemon, store)
    assert client.take(ref, cache.staging_path(ref.digest), wait_s=5.0) is Claim.MISSING
    assert daemon.metric("deltaroll_node_cache_leases_total", outcome="granted") == 0
    store.hold.clear()  # a2's fill stays under way until released
    filler = threading.Thread(target=agent_pull, args=(tmp_path, daemon, store, "tok-a2", [ref]))
    filler.start()
    assert store.started.wait(10)
    staged = cache.staging_path(ref.digest)
    taken: list[Any] = []
    peek = threading.Thread(target=lambda: taken.append(client.take(ref, staged, wait_s=20.0)))
    peek.start()
    peek.join(0.5)
    assert peek.is_alive()  # waiting on the fill, not answered "busy"
    store.hold.set()
    filler.join(30)
    peek.join(30)
    assert taken and isinstance(taken[0], StagedHash)
    assert cache.commit(ref.digest, staged, hashed=taken[0]) == ref.digest
    assert daemon.metric("deltaroll_node_cache_refused_total", reason="busy") == 0
    assert store.downloads == [keys.object_key(MODEL, ref.digest)]


class _NotANodeCache(BaseHTTPRequestHandler):
    """What answers at the node cache's address when it is something else (a proxy's page)."""

    def do_GET(self) -> None:
        body = b"<html><body>404 Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        """Quiet."""


def test_a_404_that_is_not_a_lease_leaves_the_object_to_the_agent(tmp_path, store):
    """The node cache can make a pull cheaper, never stop it: a 404 whose body is not a lease
    raised from the pull (a peer pull claiming a fill failed outright)."""
    ref = store.put(os.urandom(50_000))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotANodeCache)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "token").write_text("tok-a1")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = NodeCacheClient(url, tmp_path / "token", store.uri)
        cache = ObjectCache(tmp_path / "cache")
        assert client.claim(ref, cache.staging_path(ref.digest), 0.0) is Claim.UNAVAILABLE
        download_objects(store.backend, MODEL, [ref], cache, node_cache=client)
    finally:
        server.shutdown()
    assert hashlib.sha256(cache.path(ref.digest).read_bytes()).hexdigest() == ref.digest
    assert store.downloads == [keys.object_key(MODEL, ref.digest)]
