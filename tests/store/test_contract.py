"""The store contract, run against every backend: file://, s3:// (moto) and hf:// (when set up).

Versions v0..v6 are the shared tiny model after 0..6 AdamW steps."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import (
    BaseNotInStoreError,
    BaseRequiredError,
    CorruptObjectError,
    NameConflictError,
    ObjectNotFoundError,
    Store,
    VersionNotFoundError,
    keys,
)
from deltaroll.store.manifests import DeltaRecord
from fixtures.checkpoints import read_tensors


def push_chain(store: Store, checkpoints: list[Path], count: int, model: str = "tiny") -> list[str]:
    """Push v0 (an anchor) and v1..v{count-1} as deltas; return their version ids."""
    versions = [store.push(model, checkpoints[0], name="step-0").version]
    for index in range(1, count):
        result = store.push(model, checkpoints[index], base=checkpoints[index - 1])
        assert result.parent == versions[-1]
        versions.append(result.version)
    return versions


def assert_same_weights(actual: Path, expected: Path) -> None:
    got, want = read_tensors(actual), read_tensors(expected)
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype
        assert (
            got[name]
            .view(-1)
            .view(dtype_bits(tensor))
            .equal(tensor.view(-1).view(dtype_bits(tensor)))
        )
    assert checkpoint_version(actual) == checkpoint_version(expected)


def dtype_bits(tensor):  # noqa: ANN001, ANN201 - compare raw bits, never float values
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]


def unique_bytes(deltas: list[DeltaRecord]) -> int:
    return sum({ref.digest: ref.size for d in deltas for ref in d.objects}.values())


def test_push_anchor_then_deltas(store: Store, checkpoints: list[Path]) -> None:
    first = store.push("tiny", checkpoints[0], name="step-0")
    assert first.parent is None and first.anchored and first.published
    assert first.version == checkpoint_version(checkpoints[0])
    assert first.uploaded_bytes > 0

    versions = [first.version]
    for index in range(1, 4):
        result = store.push("tiny", checkpoints[index], base=checkpoints[index - 1])
        assert (result.parent, result.published, result.anchored) == (versions[-1], True, False)
        assert 0 < result.uploaded_bytes < first.uploaded_bytes / 3
        versions.append(result.version)

    log = store.log("tiny")
    assert [e.version for e in log] == versions
    assert [e.parent for e in log] == [None, *versions[:-1]]
    assert log[0].anchored and log[0].names == ["step-0"]
    assert store.resolve("tiny", "step-0") == versions[0]
    assert store.resolve("tiny", versions[2][:8]) == versions[2]


def test_push_again_is_a_no_op(store: Store, checkpoints: list[Path]) -> None:
    versions = push_chain(store, checkpoints, 2)
    again = store.push("tiny", checkpoints[1], base=checkpoints[0])
    assert (again.version, again.published, again.uploaded_bytes) == (versions[1], False, 0)


def test_push_without_base_on_a_model_with_versions_is_refused(
    store: Store, checkpoints: list[Path]
) -> None:
    push_chain(store, checkpoints, 1)
    with pytest.raises(BaseRequiredError, match="--base") as caught:
        store.push("tiny", checkpoints[1])
    assert "--anchor" in str(caught.value)
    assert len(store.versions("tiny")) == 1


def test_push_on_an_unpublished_base_is_refused(store: Store, checkpoints: list[Path]) -> None:
    push_chain(store, checkpoints, 1)
    with pytest.raises(BaseNotInStoreError, match="push the base checkpoint first"):
        store.push("tiny", checkpoints[2], base=checkpoints[1])
    assert len(store.versions("tiny")) == 1
    assert len(store.catalog.list_keys("tiny/objects/")) == len(
        store.graph("tiny").anchors[checkpoint_version(checkpoints[0])].delta.objects
    )


def test_pull_of_the_version_the_base_already_is(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 3)
    result = store.pull("tiny", versions[2], tmp_path / "out", base=checkpoints[2])
    assert (result.path, result.steps, result.downloaded_bytes) == ([versions[2]], [], 0)
    assert_same_weights(tmp_path / "out", checkpoints[2])


def test_pull_from_nothing(store: Store, checkpoints: list[Path], tmp_path: Path) -> None:
    versions = push_chain(store, checkpoints, 4)
    result = store.pull("tiny", versions[3], tmp_path / "out")
    assert result.version == versions[3]
    assert result.path == versions  # the anchor v0, then three forward deltas
    assert result.steps == ["anchor", "forward", "forward", "forward"]
    assert_same_weights(tmp_path / "out", checkpoints[3])
    graph = store.graph("tiny")
    expected = [graph.anchors[versions[0]].delta] + [graph.versions[v].delta for v in versions[1:]]
    assert result.downloaded_bytes == unique_bytes([d for d in expected if d is not None])


def test_pull_from_an_older_local_version_downloads_only_the_deltas(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 6)
    result = store.pull("tiny", versions[5], tmp_path / "out", base=checkpoints[2])
    assert result.path == versions[2:6]
    assert result.steps == ["forward"] * 3
    assert_same_weights(tmp_path / "out", checkpoints[5])

    graph = store.graph("tiny")
    on_path = [graph.versions[v].delta for v in versions[3:6]]
    full = graph.anchors[versions[0]].delta.total_bytes
    assert result.downloaded_bytes == unique_bytes([d for d in on_path if d is not None])
    assert result.downloaded_bytes < full / 4
    assert (tmp_path / "out").is_dir() and checkpoints[2].is_dir()  # the base is untouched
    assert checkpoint_version(checkpoints[2]) == versions[2]


def test_pull_backwards_reverses_deltas(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 5)
    result = store.pull("tiny", versions[1], tmp_path / "rollback", base=checkpoints[4])
    assert result.path == [versions[4], versions[3], versions[2], versions[1]]
    assert result.steps == ["reverse"] * 3
    assert_same_weights(tmp_path / "rollback", checkpoints[1])


def test_pull_prefers_a_nearby_anchor(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 4)
    store.push("tiny", checkpoints[4], base=checkpoints[3], anchor=True)
    versions.append(checkpoint_version(checkpoints[4]))
    plan_nothing = store.plan("tiny", versions[4])
    assert [s.kind for s in plan_nothing.steps] == ["anchor"]
    plan_near = store.plan("tiny", versions[4], have=[versions[3]])
    assert [s.kind for s in plan_near.steps] == ["forward"]
    result = store.pull("tiny", versions[4], tmp_path / "out")
    assert result.path == [versions[4]]
    assert_same_weights(tmp_path / "out", checkpoints[4])


def test_concurrent_pushes_of_the_same_version(store: Store, checkpoints: list[Path]) -> None:
    push_chain(store, checkpoints, 1)
    results = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def push_one() -> None:
        try:
            barrier.wait()
            results.append(store.push("tiny", checkpoints[1], base=checkpoints[0]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({r.version for r in results}) == 1
    if not store.uri.startswith("hf://"):  # the Hub has no conditional write (documented)
        assert sum(r.published for r in results) == 1
    assert store.versions("tiny")[results[0].version].parent == checkpoint_version(checkpoints[0])


def test_a_corrupted_object_is_named_and_never_applied(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 3)
    delta = store.versions("tiny")[versions[2]].delta
    assert delta is not None
    victim = max(delta.objects, key=lambda ref: ref.size)
    key = keys.object_key("tiny", victim.digest)
    data = bytearray(store.catalog.backend.read(key))
    data[len(data) // 2] ^= 0xFF
    store.catalog.backend.write(key, bytes(data), create_only=False)

    with pytest.raises(CorruptObjectError) as caught:
        store.pull("tiny", versions[2], tmp_path / "out", base=checkpoints[1])
    assert key in str(caught.value) and store.uri in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert not store.cache.has(victim.digest)
    assert not list(tmp_path.glob(".out.pull-*"))


def test_a_missing_object_is_named(store: Store, checkpoints: list[Path], tmp_path: Path) -> None:
    versions = push_chain(store, checkpoints, 3)
    delta = store.versions("tiny")[versions[2]].delta
    assert delta is not None
    key = keys.object_key("tiny", delta.objects[0].digest)
    store.catalog.backend.delete([key])

    with pytest.raises(ObjectNotFoundError) as caught:
        store.pull("tiny", versions[2], tmp_path / "out", base=checkpoints[1])
    assert key in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_pull_resumes_without_downloading_verified_objects(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 4)
    graph = store.graph("tiny")
    wanted = [graph.versions[v].delta for v in versions[1:4]]
    total = unique_bytes([d for d in wanted if d is not None])
    hidden = wanted[-1].objects[0] if wanted[-1] else None
    assert hidden is not None
    key = keys.object_key("tiny", hidden.digest)
    saved = store.catalog.backend.read(key)
    store.catalog.backend.delete([key])
    with pytest.raises(ObjectNotFoundError):
        store.pull("tiny", versions[3], tmp_path / "out", base=checkpoints[0])
    refs = {ref.digest: ref for d in wanted if d for ref in d.objects}
    cached = sum(ref.size for ref in refs.values() if store.cache.has(ref.digest))
    assert cached == total - hidden.size  # everything else arrived and was verified

    store.catalog.backend.write(key, saved, create_only=False)
    result = store.pull("tiny", versions[3], tmp_path / "out", base=checkpoints[0])
    assert result.downloaded_bytes == hidden.size
    assert_same_weights(tmp_path / "out", checkpoints[3])


def test_names_are_not_moved_silently(store: Store, checkpoints: list[Path]) -> None:
    versions = push_chain(store, checkpoints, 2)
    assert store.set_name("tiny", "prod", versions[0])
    assert not store.set_name("tiny", "prod", versions[0])  # idempotent
    with pytest.raises(NameConflictError, match="--force-name"):
        store.set_name("tiny", "prod", versions[1])
    assert store.resolve("tiny", "prod") == versions[0]
    assert store.set_name("tiny", "prod", versions[1], force=True)
    assert store.resolve("tiny", "prod") == versions[1]
    with pytest.raises(VersionNotFoundError):
        store.resolve("tiny", "no-such-name")


def test_gc_keeps_what_is_asked_and_what_it_depends_on(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 5)
    store.set_name("tiny", "keep-me", versions[2])
    store.set_name("tiny", "latest", versions[4])
    before = {info.key for info in store.catalog.list_keys("tiny/objects/")}

    dry = store.gc("tiny", ["keep-me"], dry_run=True, grace=_no_grace())
    assert dry.deleted_versions == sorted(versions[3:5]) and dry.deleted_objects > 0
    assert {info.key for info in store.catalog.list_keys("tiny/objects/")} == before

    result = store.gc("tiny", ["keep-me"], grace=_no_grace())
    assert result.kept_versions == sorted(versions[:3])
    assert result.deleted_names == ["latest"]
    assert set(store.versions("tiny")) == set(versions[:3])
    after = {info.key for info in store.catalog.list_keys("tiny/objects/")}
    assert after < before
    graph = store.graph("tiny")
    needed = {r.digest for r in graph.anchors[versions[0]].delta.objects}
    for version in versions[1:3]:
        delta = graph.versions[version].delta
        assert delta is not None
        needed |= {r.digest for r in delta.objects}
    assert after == {keys.object_key("tiny", d) for d in needed}
    pulled = store.pull("tiny", "keep-me", tmp_path / "out")
    assert_same_weights(tmp_path / "out", checkpoints[2])
    assert pulled.path == versions[:3]


def test_gc_stops_at_the_nearest_anchor(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 3)
    store.push("tiny", checkpoints[3], base=checkpoints[2], anchor=True)
    store.push("tiny", checkpoints[4], base=checkpoints[3])
    v3, v4 = checkpoint_version(checkpoints[3]), checkpoint_version(checkpoints[4])

    result = store.gc("tiny", [v4], grace=_no_grace())
    assert result.kept_versions == sorted([v3, v4])
    assert result.deleted_versions == sorted(versions)
    assert result.rerooted == [v3]
    assert store.versions("tiny")[v3].parent is None
    store.pull("tiny", v4, tmp_path / "out")
    assert_same_weights(tmp_path / "out", checkpoints[4])


def test_gc_spares_young_unreferenced_objects(store: Store, checkpoints: list[Path]) -> None:
    versions = push_chain(store, checkpoints, 3)
    result = store.gc("tiny", [versions[1]])  # default grace: an hour
    assert result.deleted_versions == [versions[2]]
    assert result.deleted_objects == 0


def test_squash_replaces_a_chain_by_one_delta(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 5)
    result = store.squash("tiny", versions[1], versions[4])
    assert (result.version, result.parent, result.previous_parent) == (
        versions[4],
        versions[1],
        versions[3],
    )
    assert 0 < result.delta_bytes < result.previous_chain_bytes
    pulled = store.pull("tiny", versions[4], tmp_path / "out", base=checkpoints[1])
    assert pulled.path == [versions[1], versions[4]]
    assert_same_weights(tmp_path / "out", checkpoints[4])
    back = store.pull("tiny", versions[1], tmp_path / "back", base=checkpoints[4])
    assert back.path == [versions[4], versions[1]]
    assert_same_weights(tmp_path / "back", checkpoints[1])


def _no_grace():  # noqa: ANN202
    from datetime import timedelta

    return timedelta(0)


def test_a_conflicting_name_is_refused_before_anything_is_uploaded(
    store: Store, checkpoints: list[Path]
) -> None:
    push_chain(store, checkpoints, 2)
    store.set_name("tiny", "prod", checkpoint_version(checkpoints[1]))
    before = {info.key for info in store.catalog.list_keys("tiny/")}
    with pytest.raises(NameConflictError):
        store.push("tiny", checkpoints[2], base=checkpoints[1], name="prod")
    assert {info.key for info in store.catalog.list_keys("tiny/")} == before
    moved = store.push("tiny", checkpoints[2], base=checkpoints[1], name="prod", force_name=True)
    assert store.resolve("tiny", "prod") == moved.version


def test_pull_across_a_branch_goes_back_then_forward(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    versions = push_chain(store, checkpoints, 3)  # v0 -> v1 -> v2
    branch = store.push("tiny", checkpoints[4], base=checkpoints[1])  # v1 -> v4, a sibling of v2
    assert branch.parent == versions[1]
    result = store.pull("tiny", branch.version, tmp_path / "out", base=checkpoints[2])
    assert result.path == [versions[2], versions[1], branch.version]
    assert result.steps == ["reverse", "forward"]
    assert_same_weights(tmp_path / "out", checkpoints[4])


def test_a_tampered_version_manifest_is_refused(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """A version record listing other objects than its delta's manifest needs is refused,
    naming the delta, before anything is applied."""
    import json

    from deltaroll.store import InvalidManifestError

    versions = push_chain(store, checkpoints, 2)
    key = keys.version_key("tiny", versions[1])
    document = json.loads(store.catalog.backend.read(key))
    document["delta"]["payload"] = document["delta"]["payload"][1:]
    store.catalog.backend.write(key, json.dumps(document).encode(), create_only=False)
    with pytest.raises(InvalidManifestError, match="lists other objects"):
        store.pull("tiny", versions[1], tmp_path / "out", base=checkpoints[0])
    assert not (tmp_path / "out").exists()


def test_a_version_is_its_payload_packs_a_manifest_object_and_a_small_record(
    store: Store, checkpoints: list[Path]
) -> None:
    """Listing a model reads records of a few hundred bytes, not each delta's manifest; a pod
    fetches ceil(payload / 64 MiB) packs, the manifest object, and the record."""
    import math

    from deltaroll.checkpoint.manifest import PACK_BYTES, parse_delta_manifest

    versions = push_chain(store, checkpoints, 2)
    key = keys.version_key("tiny", versions[1])
    assert len(store.catalog.backend.read(key)) < 2048
    delta = store.catalog.read_version("tiny", versions[1]).delta
    assert delta is not None
    payload = sum(ref.size for ref in delta.payload)
    assert delta.objects == [delta.manifest, *delta.payload]
    assert len(delta.payload) == math.ceil(payload / PACK_BYTES)
    data = store.catalog.backend.read(keys.object_key("tiny", delta.manifest.digest))
    manifest = parse_delta_manifest(data, "the stored manifest")
    assert [(o.digest, o.size) for o in manifest.objects] == [
        (o.digest, o.size) for o in delta.payload
    ]
    assert (delta.changed_elements, delta.total_elements) == (
        sum(e.changed_elements for e in manifest.tensors if e.target),
        sum(e.total_elements for e in manifest.tensors if e.target),
    )


def test_a_store_written_by_an_older_deltaroll_is_refused_with_what_to_do(
    store: Store, checkpoints: list[Path]
) -> None:
    """A version record of the older format (its delta manifest embedded, format v1) is refused
    by name, saying how to get a usable store."""
    import json

    from deltaroll.store import InvalidManifestError

    versions = push_chain(store, checkpoints, 2)
    key = keys.version_key("tiny", versions[1])
    document = json.loads(store.catalog.backend.read(key))
    document["schema"] = "deltaroll.store.version/v1"
    store.catalog.backend.write(key, json.dumps(document).encode(), create_only=False)
    with pytest.raises(InvalidManifestError, match="deltaroll upgrade-store STORE MODEL"):
        store.catalog.read_version("tiny", versions[1])


def test_a_cached_manifest_that_is_not_the_records_is_dropped_and_fetched_again(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """A well-formed manifest planted in the cache under the record's digest (it agrees with
    the record's versions and objects) is not trusted for being there: it is replaced by the
    store's, and the pull goes on."""
    from deltaroll.checkpoint.manifest import decode_document, encode_document

    versions = push_chain(store, checkpoints, 2)
    delta = store.catalog.read_version("tiny", versions[1]).delta
    assert delta is not None
    real = store.catalog.backend.read(keys.object_key("tiny", delta.manifest.digest))
    document = decode_document(real, "the stored manifest")
    document["level"] += 1
    planted = store.cache.path(delta.manifest.digest)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(encode_document(document))
    result = store.pull("tiny", versions[1], tmp_path / "out", base=checkpoints[0], keep_cache=True)
    assert planted.read_bytes() == real
    assert result.downloaded_bytes == delta.total_bytes
    assert_same_weights(tmp_path / "out", checkpoints[1])
