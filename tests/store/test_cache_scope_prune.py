"""Scopes of a shared cache directory that nobody uses any more are removed (issue 16).

A scope is one store read with one set of credentials; rotated credentials or a pod moved to
another store leave the old scope behind. An agent's prune (and a pull's) removes the scopes that
no live process holds and nobody used for a day, and nothing else: not a scope another agent
process holds (a real process, a real kernel lock), not one used recently, not its own, not a
link. An object a delta or checkpoint directory hard-links keeps its bytes there."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from deltaroll.agent.fetch import fetched_objects, prune_cache
from deltaroll.api.object_cache import LOCK_NAME, UNUSED_SCOPE_TTL
from deltaroll.store import Store
from deltaroll.store.cache_leases import CacheLeases
from deltaroll.store.scope_prune import prune_unused_scopes
from store.support import FAST_RETRY
from store.test_cache_sharing import objects_of, published, start_reader  # noqa: F401

DAY_AND_A_BIT = UNUSED_SCOPE_TTL.total_seconds() + 3600


def copy_of_store(tmp_path: Path, name: str) -> str:
    """Another store with the same model (another scope of the same cache directory, as a
    rotated credential gives)."""
    shutil.copytree(tmp_path / "store", tmp_path / name)
    return f"file://{tmp_path / name}"


def fetched_and_released(uri: str, cache: Path, start: str, target: str) -> Store:
    store = Store(uri, cache_dir=cache, retry=FAST_RETRY)
    with fetched_objects(store, "tiny", store.plan("tiny", target, [start]).steps):
        pass  # in the cache, held by nobody once the block ends
    return store


def age(store: Store) -> None:
    past = time.time() - DAY_AND_A_BIT
    os.utime(store.cache.root / LOCK_NAME, (past, past))


def test_an_agents_prune_removes_unused_scopes_and_nothing_in_use(
    published: tuple[str, list[str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """On main every scope but the agent's own stayed forever, whatever its age."""
    uri, versions = published
    cache = tmp_path / "shared-cache"
    unused = fetched_and_released(copy_of_store(tmp_path, "rotated"), cache, *versions[:2])
    recent = fetched_and_released(copy_of_store(tmp_path, "recent"), cache, *versions[:2])
    age(unused)
    # A delta directory that hard-links an object of the unused scope (as an apply does).
    digest = sorted(objects_of(unused, *versions[:2]))[0]
    linked = tmp_path / "delta" / digest
    linked.parent.mkdir()
    unused.cache.link_into(digest, linked)
    expected = linked.read_bytes()
    # Another agent process holds the objects of a scope nobody entered for a day.
    held_uri = copy_of_store(tmp_path, "held")
    reader = start_reader(held_uri, cache, versions[1], versions[2], tmp_path / "reader")
    held = Store(held_uri, cache_dir=cache, retry=FAST_RETRY)
    age(held)
    # A link named like a scope, into a folder of someone else's.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep-me").write_text("not the cache's")
    os.symlink(elsewhere, cache / ("f" * 32))

    own = Store(uri, cache_dir=cache, retry=FAST_RETRY)
    plan = own.plan("tiny", versions[3], [versions[2]])
    with fetched_objects(own, "tiny", plan.steps):
        prune_cache(own, plan, frozenset())

    assert not unused.cache.root.exists()
    assert linked.read_bytes() == expected  # the delta directory's link keeps the bytes
    assert recent.cache.root.is_dir() and all(
        recent.cache.has(d) for d in objects_of(recent, *versions[:2])
    )
    assert own.cache.root.is_dir()
    assert (elsewhere / "keep-me").exists() and (cache / ("f" * 32)).is_symlink()
    (tmp_path / "reader" / "go").write_text("go")
    output, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0, output  # it read every object it held
    assert all(held.cache.has(d) for d in objects_of(held, versions[1], versions[2]))
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [recent.cache.root.name, own.cache.root.name, held.cache.root.name, "f" * 32]
    )


def test_a_pull_removes_unused_scopes_unless_told_to_keep_the_cache(
    published: tuple[str, list[str]],  # noqa: F811
    checkpoints: list[Path],
    tmp_path: Path,
) -> None:
    uri, versions = published
    cache = tmp_path / "cache"
    unused = fetched_and_released(copy_of_store(tmp_path, "rotated"), cache, *versions[:2])
    age(unused)
    leftover = cache / ".removing-0123"  # a removal interrupted by a crash
    (leftover / "objects").mkdir(parents=True)
    puller = Store(uri, cache_dir=cache, retry=FAST_RETRY)
    puller.pull("tiny", versions[2], tmp_path / "kept", base=checkpoints[1], keep_cache=True)
    assert unused.cache.root.is_dir() and leftover.is_dir()
    puller.pull("tiny", versions[2], tmp_path / "out", base=checkpoints[1])
    assert not unused.cache.root.exists() and not leftover.exists()


def test_two_agents_pruning_the_same_unused_scope_at_once_both_finish(
    published: tuple[str, list[str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The second waits for the scope's lock while the first removes the scope: it finds the
    scope gone and goes on (it must not fail the agent's pass)."""
    uri, versions = published
    cache = tmp_path / "cache"
    unused = fetched_and_released(copy_of_store(tmp_path, "rotated"), cache, *versions[:2])
    age(unused)
    own = Store(uri, cache_dir=cache, retry=FAST_RETRY).cache.root
    lock = unused.cache.root / LOCK_NAME
    outcome: list[object] = []
    with CacheLeases(unused.cache.root).locked(exclusive=True):  # the first pruner, midway
        second = threading.Thread(
            target=lambda: outcome.append(prune_unused_scopes(own)), daemon=True
        )
        second.start()
        wait_until_blocked_on(lock)
        os.rename(unused.cache.root, cache / ".removing-first")
    second.join(timeout=30)
    assert outcome == [[]]
    assert not unused.cache.root.exists()


def wait_until_blocked_on(lock: Path) -> None:
    """Until some process waits for ``lock``'s flock (a ``->`` line of /proc/locks)."""
    inode = f":{lock.stat().st_ino} "
    deadline = time.monotonic() + 30
    while not any(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()
    ):
        assert time.monotonic() < deadline, "the second pruner never waited for the lock"
        time.sleep(0.01)
