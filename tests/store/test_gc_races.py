"""A store loses nothing under concurrency (issue 16, finding 4): publishers and gc, at once.

Real threads against the file backend and a real S3 protocol (moto): versions are published
and deleted again and again, so a publish finds objects that a gc is about to delete (and skips
uploading them) and writes its manifest while gc works. Whatever the interleaving, every version
a listing shows must pull bit-exact."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest
from deltaroll.store import Store, leases
from deltaroll.store.errors import StoreBusyError
from store.support import FAST_RETRY, make_bucket, pulls_bit_exact

CONTENTS, ROUNDS = 3, 8


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    cache = tmp_path / "cache"
    if request.param == "file":
        return Store(f"file://{tmp_path / 'store'}", cache_dir=cache, retry=FAST_RETRY)
    endpoint = request.getfixturevalue("s3_env")
    return Store(f"s3://{make_bucket(endpoint)}/models", cache_dir=cache, retry=FAST_RETRY)


def test_publishers_racing_gc_leave_every_listed_version_whole(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """Per content, one thread publishes its version and another deletes it (as deleting its
    ModelDelta does: gc of every version but that one, no grace) over and over; then each is
    published once more, and every version must pull bit-exact."""
    anchor = store.push("tiny", checkpoints[0], anchor=True).version
    deltas = []
    for index, checkpoint in enumerate(checkpoints[1 : CONTENTS + 1], start=1):
        diff_checkpoints(checkpoints[0], checkpoint, tmp_path / f"delta-{index}")
        deltas.append((tmp_path / f"delta-{index}", checkpoint))
    expected = {read_delta_manifest(d).target_version: c for d, c in deltas}
    failures: list[BaseException] = []
    collected = {"objects": 0, "versions": 0}

    def publisher(delta: Path) -> None:
        for _ in range(ROUNDS):
            try:
                store.publish("tiny", delta)
            except StoreBusyError:
                pass  # a gc held the store too long: nothing was published
            except Exception as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)
            time.sleep(0.02)

    def deleter(version: str) -> None:
        done = 0
        while done < ROUNDS:
            try:
                result = store.gc("tiny", None, drop=[version], grace=timedelta(0))
            except StoreBusyError:
                time.sleep(0.01)  # a publish was in its last step: nothing was deleted
                continue
            except Exception as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)
                return
            collected["objects"] += result.deleted_objects
            collected["versions"] += len(result.deleted_versions)
            done += 1

    threads = [threading.Thread(target=publisher, args=(d,)) for d, _ in deltas]
    threads += [threading.Thread(target=deleter, args=(v,)) for v in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    assert collected["versions"] and collected["objects"], collected  # gc really collected
    for delta, _ in deltas:
        store.publish("tiny", delta)  # a version still listed is left as it is
    listed = set(store.versions("tiny")) - {anchor}
    assert listed == set(expected)
    for version in sorted(listed):
        out = tmp_path / "pulled" / version
        assert pulls_bit_exact(store, version, expected[version], out), version


def test_a_name_is_not_set_while_a_gc_holds_the_model(
    tmp_path: Path, checkpoints: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main ``set_name`` checked that the version exists and wrote the name with no lease:
    a gc between the two (it deletes names before versions) left a name pointing at nothing."""
    store = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache", retry=FAST_RETRY)
    version = store.push("tiny", checkpoints[0]).version
    monkeypatch.setattr(leases, "GC_WAIT", timedelta(seconds=0.3))
    with leases.collecting(store.catalog, "tiny"), pytest.raises(StoreBusyError):
        store.set_name("tiny", "prod", version)
    assert store.catalog.read_name("tiny", "prod") is None
    assert store.set_name("tiny", "prod", version)  # once gc is done


def test_a_renewed_publish_lease_keeps_gc_out_past_its_first_time_to_live(tmp_path: Path) -> None:
    """A long holder (``upgrade-store``) renews its lease: gc counts its age from the last
    write, so it is still refused after the first write's time to live has passed; a holder
    that stopped renewing past half of it is told to stop."""
    catalog = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache").catalog
    ttl = timedelta(seconds=4)
    with leases.publishing(catalog, "tiny", ttl=ttl) as lease:
        # Renew as a long holder does, often (it writes only once 1 s has passed): 5 s in all,
        # past the first write's 4 s. A pause of over 2 s between two calls (half the lease)
        # would be refused, as it should be; polling often keeps a loaded machine well inside.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.1)
            lease.renew(catalog)
        with (
            pytest.raises(StoreBusyError, match="in progress"),
            leases.collecting(catalog, "tiny", ttl=ttl),
        ):
            pass
        time.sleep(2.1)
        with pytest.raises(StoreBusyError, match="longer than half"):
            lease.renew(catalog)
