"""A cache directory that many agents share (issue 16, finding 5).

Real processes, a real kernel lock: a second agent process holds the objects of its plan while
this one prunes; a torn or wrong cached file is fetched again rather than trusted or fatal; a
tenant whose bucket names another tenant's objects never gets them from the cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltaroll.agent.fetch import fetched_objects, prune_cache
from deltaroll.store import ObjectNotFoundError, Store
from store.support import FAST_RETRY
from store.test_contract import assert_same_weights, push_chain

READER = Path(__file__).with_name("cache_reader.py")


@pytest.fixture
def published(checkpoints: list[Path], tmp_path: Path) -> tuple[str, list[str]]:
    """A file:// store with v0 (an anchor) and v1..v3 as deltas."""
    uri = f"file://{tmp_path / 'store'}"
    return uri, push_chain(Store(uri, cache_dir=tmp_path / "push-cache"), checkpoints, 4)


def objects_of(store: Store, start: str, target: str) -> set[str]:
    return {
        ref.digest for s in store.plan("tiny", target, [start]).steps for ref in s.delta.objects
    }


def start_reader(uri: str, cache: Path, start: str, target: str, work: Path) -> subprocess.Popen:
    """Another agent process: fetches and holds start -> target, then waits for ``work/go``."""
    work.mkdir()
    ready, go = work / "ready", work / "go"
    reader = subprocess.Popen(
        [sys.executable, str(READER), uri, str(cache), "tiny", start, target, str(ready), str(go)]
        + [str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert reader.poll() is None, reader.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return reader


def test_a_prune_keeps_what_another_agent_process_is_reading(
    published: tuple[str, list[str]], tmp_path: Path
) -> None:
    """Agent B prunes the shared cache down to its own plan while agent A (another process)
    holds the objects of A's plan and has not read them yet: A reads them all afterwards;
    what nobody holds is gone."""
    uri, versions = published
    cache = tmp_path / "shared-cache"
    pruner = Store(uri, cache_dir=cache, retry=FAST_RETRY)
    unheld = pruner.plan("tiny", versions[1], [versions[0]])
    with fetched_objects(pruner, "tiny", unheld.steps):
        pass  # in the cache, held by nobody once the block ends
    reader = start_reader(uri, cache, versions[1], versions[2], tmp_path / "reader")
    read_by_a = objects_of(pruner, versions[1], versions[2])

    own = pruner.plan("tiny", versions[3], [versions[2]])
    with fetched_objects(pruner, "tiny", own.steps):
        kept = prune_cache(pruner, own, frozenset())
    (tmp_path / "reader" / "go").write_text("go")
    output, _ = reader.communicate(timeout=120)

    assert reader.returncode == 0, output
    assert all(pruner.cache.has(digest) for digest in kept)
    gone = objects_of(pruner, versions[0], versions[1]) - read_by_a - kept
    assert gone and not any(pruner.cache.has(digest) for digest in gone)


def test_the_objects_of_a_killed_agent_are_pruned(
    published: tuple[str, list[str]], tmp_path: Path
) -> None:
    """A lease is only as alive as its holder: once the kernel drops a killed process's lock,
    the next prune removes what it held, and its lease file."""
    uri, versions = published
    cache = tmp_path / "shared-cache"
    reader = start_reader(uri, cache, versions[1], versions[2], tmp_path / "reader")
    pruner = Store(uri, cache_dir=cache, retry=FAST_RETRY)
    held = objects_of(pruner, versions[1], versions[2])
    assert pruner.cache.prune() == 0 and all(pruner.cache.has(d) for d in held)

    os.kill(reader.pid, signal.SIGKILL)
    reader.wait(timeout=30)
    assert pruner.cache.prune() == len(held)
    assert not list((pruner.cache.root / ".leases").iterdir())


@pytest.mark.parametrize("damage", ["torn", "other bytes"])
def test_a_damaged_cached_object_is_fetched_again(
    published: tuple[str, list[str]], checkpoints: list[Path], tmp_path: Path, damage: str
) -> None:
    """A cached object cut short (a crash before fsync) or with other bytes of its size (a
    disk error, a tampering neighbour) is removed and fetched again: the pull succeeds."""
    uri, versions = published
    store = Store(uri, cache_dir=tmp_path / "cache", retry=FAST_RETRY)
    store.pull("tiny", versions[2], tmp_path / "first", base=checkpoints[1], keep_cache=True)
    delta = store.versions("tiny")[versions[2]].delta
    assert delta is not None
    for victim in (delta.manifest, max(delta.payload, key=lambda ref: ref.size)):
        path = store.cache.path(victim.digest)
        data = path.read_bytes()
        path.chmod(0o644)  # objects are read-only; a neighbour of the same user chmods first
        path.write_bytes(data[: len(data) // 2] if damage == "torn" else bytes(len(data)))

        out = tmp_path / f"again-{victim.digest[:8]}"
        result = store.pull("tiny", versions[2], out, base=checkpoints[1], keep_cache=True)
        assert result.downloaded_bytes == victim.size
        assert_same_weights(out, checkpoints[2])
        assert store.cache.verified(victim.digest)


def test_a_tenant_never_gets_another_tenants_objects_from_a_shared_cache(
    published: tuple[str, list[str]], checkpoints: list[Path], tmp_path: Path
) -> None:
    """Tenant B writes its own bucket: it copies tenant A's version records (names, digests)
    but cannot copy A's objects. Pulling through the cache directory A's pull filled, B must
    find the objects missing from its store, not be served A's bytes."""
    uri_a, versions = published
    cache = tmp_path / "node-cache"
    Store(uri_a, cache_dir=cache).pull(
        "tiny", versions[2], tmp_path / "a", base=checkpoints[1], keep_cache=True
    )
    store_b = tmp_path / "store-b"
    shutil.copytree(tmp_path / "store", store_b, ignore=shutil.ignore_patterns("objects"))
    tenant_b = Store(f"file://{store_b}", cache_dir=cache, retry=FAST_RETRY)

    with pytest.raises(ObjectNotFoundError):
        tenant_b.pull("tiny", versions[2], tmp_path / "b", base=checkpoints[1])
    assert not (tmp_path / "b").exists()


def test_credentials_choose_the_cache_scope_without_being_written(tmp_path: Path) -> None:
    """One S3 URI, two tenants' keys: two scopes; the same keys again: the same scope; no
    secret appears in any name under the cache directory."""
    uri = "s3://shared-bucket/models"

    def scope(secret: str) -> Path:
        credentials = {"AWS_ACCESS_KEY_ID": f"AKIA{secret}", "AWS_SECRET_ACCESS_KEY": secret}
        return Store(uri, credentials=credentials, cache_dir=tmp_path).cache.root

    first, second = scope("tenant-a-secret-1234"), scope("tenant-b-secret-5678")
    assert first != second and scope("tenant-a-secret-1234") == first
    assert first.parent == second.parent == tmp_path
    for stored in (first, second):
        stored.mkdir()
    names = " ".join(str(p) for p in tmp_path.rglob("*"))
    assert "secret" not in names and "AKIA" not in names
