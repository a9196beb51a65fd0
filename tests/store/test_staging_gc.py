"""gc and the staged parts of sharded computations, on every backend: file://, s3:// (moto) and
hf:// (the fake Hub). Parts are real share manifests, made by diffing the tiny model's steps."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest
from deltaroll.checkpoint.manifest import MANIFEST_NAME
from deltaroll.store import InvalidNameError, Store, keys, parse_store_uri
from deltaroll.store.backends.hf import HfBackend
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.staging import EMPTY_SHARE, record_job, record_part
from deltaroll.store.transfer import upload_objects
from store.fake_hub import FakeHubApi
from store.support import FAST_RETRY, make_bucket, pulls_bit_exact

NO_GRACE = timedelta(0)
GROUP, OTHER_GROUP = "a" * 32, "b" * 32


@pytest.fixture(params=["file", "s3", "hf"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh store of each backend kind (hf: the fake Hub, whose listing says "just now")."""
    cache = tmp_path / "cache"
    if request.param == "file":
        return Store(f"file://{tmp_path / 'store'}", cache_dir=cache, retry=FAST_RETRY)
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_env")
        return Store(f"s3://{make_bucket(endpoint)}/models", cache_dir=cache, retry=FAST_RETRY)
    uri = "hf://buckets/ns/bucket/team/models"
    backend = HfBackend(parse_store_uri(uri), api=FakeHubApi())  # type: ignore[arg-type]
    return Store(uri, backend=backend, cache_dir=cache, retry=FAST_RETRY)


@dataclass(frozen=True)
class Share:
    """A delta's manifest as a share's part, and the objects it lists."""

    part: bytes
    objects: list[ObjectRef]
    directory: Path


def share(base: Path, target: Path, out: Path) -> Share:
    diff_checkpoints(base, target, out)
    refs = [ObjectRef(digest=o.digest, size=o.size) for o in read_delta_manifest(out).objects]
    return Share((out / MANIFEST_NAME).read_bytes(), refs, out)


def upload(store: Store, delta: Share) -> None:
    upload_objects(store.catalog.backend, "tiny", delta.directory / "objects", delta.objects)


def staged_keys(store: Store) -> set[str]:
    return {info.key for info in store.catalog.list_keys(keys.staging_prefix("tiny"))}


def object_keys(store: Store) -> set[str]:
    return {info.key for info in store.catalog.list_keys(keys.objects_prefix("tiny"))}


def needed_objects(store: Store) -> set[str]:
    """The object keys that the store's versions and anchors refer to."""
    graph = store.graph("tiny")
    deltas = [v.delta for v in graph.versions.values()] + [a.delta for a in graph.anchors.values()]
    return {keys.object_key("tiny", o.digest) for d in deltas if d for o in d.objects}


def push_two(store: Store, checkpoints: list[Path]) -> list[str]:
    first = store.push("tiny", checkpoints[0], name="step-0")
    second = store.push("tiny", checkpoints[1], base=checkpoints[0], name="step-1")
    return [first.version, second.version]


def test_gc_removes_a_published_groups_parts_at_once(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """A complete group whose version is published (its publisher's cleanup failed) goes at
    the default grace; the version's objects stay and it still pulls bit-exact."""
    versions = push_two(store, checkpoints)
    delta = share(checkpoints[0], checkpoints[1], tmp_path / "share")
    record_part(store.catalog, "tiny", GROUP, 0, 2, delta.part)
    record_part(store.catalog, "tiny", GROUP, 1, 2, EMPTY_SHARE)
    objects = object_keys(store)

    dry = store.gc("tiny", ["step-1"], dry_run=True)
    assert dry.deleted_staging_parts == 2 and len(staged_keys(store)) == 2

    result = store.gc("tiny", ["step-1"])
    assert result.deleted_staging_parts == 2 and result.deleted_versions == []
    assert staged_keys(store) == set() and object_keys(store) == objects
    assert pulls_bit_exact(store, versions[1], checkpoints[1], tmp_path / "out")


def test_gc_keeps_a_recent_group_it_cannot_prove_published(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """Within the grace period gc keeps: a running group (its version unpublished), a lone
    part whose content matches a published version (a retried index: its group may be another
    still running). Past it, they go."""
    versions = push_two(store, checkpoints)
    running = share(checkpoints[1], checkpoints[2], tmp_path / "running")
    upload(store, running)
    record_part(store.catalog, "tiny", GROUP, 0, 3, running.part)
    lone = share(checkpoints[0], checkpoints[1], tmp_path / "lone")
    record_part(store.catalog, "tiny", OTHER_GROUP, 1, 2, lone.part)
    foreign = f"{keys.staging_prefix('tiny')}notes.txt"
    store.catalog.write_bytes(foreign, b"not a part", create_only=False)
    staged, objects = staged_keys(store), object_keys(store)
    assert len(staged) == 3

    kept = store.gc("tiny", ["step-1"])
    assert kept.deleted_staging_parts == 0
    assert staged_keys(store) == staged and object_keys(store) == objects

    dry = store.gc("tiny", ["step-1"], dry_run=True, grace=NO_GRACE)
    assert dry.deleted_staging_parts == 2 and dry.deleted_objects > 0
    assert staged_keys(store) == staged and object_keys(store) == objects

    done = store.gc("tiny", ["step-1"], grace=NO_GRACE)
    assert done.deleted_staging_parts == 2
    assert staged_keys(store) == {foreign}  # gc deletes only what it understands
    assert object_keys(store) == needed_objects(store) < objects
    assert pulls_bit_exact(store, versions[1], checkpoints[1], tmp_path / "out")


def test_a_kept_part_protects_objects_older_than_the_grace(
    checkpoints: list[Path], tmp_path: Path
) -> None:
    """A long-running group uploaded its first share's objects long ago; while the group is
    active they are referenced, once it has been idle past the grace they are collected."""
    root = tmp_path / "store"
    store = Store(f"file://{root}", cache_dir=tmp_path / "cache", retry=FAST_RETRY)
    push_two(store, checkpoints)
    running = share(checkpoints[1], checkpoints[2], tmp_path / "running")
    upload(store, running)
    record_part(store.catalog, "tiny", GROUP, 0, 2, running.part)
    two_hours_ago = time.time() - 7200
    for ref in running.objects:
        os.utime(root / keys.object_key("tiny", ref.digest), (two_hours_ago, two_hours_ago))
    objects = object_keys(store)

    kept = store.gc("tiny", ["step-1"])
    assert (kept.deleted_staging_parts, kept.deleted_objects) == (0, 0)
    assert object_keys(store) == objects

    part = root / keys.staging_part_key("tiny", GROUP, 0, 2)
    os.utime(part, (two_hours_ago, two_hours_ago))
    idle = store.gc("tiny", ["step-1"])
    assert idle.deleted_staging_parts == 1 and idle.deleted_objects > 0
    assert not part.exists()
    assert object_keys(store) == needed_objects(store) < objects


def test_a_group_is_kept_while_its_job_exists_and_collected_once_it_is_gone(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """On main a group idle past the grace was collected while its Job still ran (a slow
    share); told which Jobs exist, gc keeps it however idle, and drops it once its Job is gone
    however recent. A namespace gc did not look at leaves idleness to decide."""
    push_two(store, checkpoints)
    running = share(checkpoints[1], checkpoints[2], tmp_path / "running")
    upload(store, running)
    record_job(store.catalog, "tiny", GROUP, "team-a/compute-step-2")
    record_part(store.catalog, "tiny", GROUP, 0, 2, running.part)

    live = {"team-a": {"compute-step-2"}}
    kept = store.gc("tiny", ["step-1"], grace=NO_GRACE, live_jobs=live)
    assert (kept.deleted_staging_parts, kept.deleted_objects) == (0, 0)
    elsewhere = store.gc("tiny", ["step-1"], live_jobs={"team-b": set()})
    assert elsewhere.deleted_staging_parts == 0  # recent, and its namespace was not looked at

    gone = store.gc("tiny", ["step-1"], grace=NO_GRACE, live_jobs={"team-a": {"other-job"}})
    assert gone.deleted_staging_parts == 2 and gone.deleted_objects > 0  # the part and job.json
    assert object_keys(store) == needed_objects(store)


def test_staging_keys_carry_the_share_count() -> None:
    key = keys.staging_part_key("tiny", GROUP, 2, 3)
    assert key == f"tiny/staging/{GROUP}/part-0002-of-0003.json"
    prefix = keys.staging_prefix("tiny")
    assert keys.staging_part(key, prefix) == (GROUP, 2, 3)
    assert keys.staging_part(f"{prefix}{GROUP}/part-0001.json", prefix) is None
    assert keys.staging_part(f"{prefix}{GROUP}/notes.json", prefix) is None
    assert keys.staging_part("tiny/objects/part-0001.json", prefix) is None
    with pytest.raises(InvalidNameError):
        keys.staging_part_key("tiny", "../escape", 0, 1)
