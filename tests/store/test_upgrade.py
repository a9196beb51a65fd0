"""A store written by an older Deltaroll (delta format v1, made by that Deltaroll's own CLI: see
data/v1_store/HOW.md) is converted by ``deltaroll upgrade-store``: every version rebuilt bit for
bit (checked against the v1 checksums), published in today's format, names moved, the v1 records
kept, and a crash in the middle finished by running the command again."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import xxhash

from deltaroll.checkpoint.reader import open_checkpoint
from deltaroll.codec.delta import encode_tensor_delta
from deltaroll.store import InvalidManifestError, Store, keys
from deltaroll.store import upgrade as upgrade_module
from deltaroll.store.errors import StoreBusyError
from deltaroll.store.upgrade import upgrade_model
from fixtures.cli import deltaroll_json

V1_STORE = Path(__file__).parent / "data" / "v1_store"
V1_NAMES = {
    "step-0": "107acd036016ff89a6fba5c744248af2",
    "step-2": "67c4ff2dc3787f2b9ed9d685d31b6ee7",
}


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(V1_STORE, root, ignore=shutil.ignore_patterns("HOW.md"))
    return root


def _v1_target_checksums(root: Path, version: str) -> dict[str, str]:
    """What the v1 manifest says each tensor and file of ``version`` hashes to (xxh3-128)."""
    for folder in ("versions", "anchors"):
        path = root / "tiny" / "legacy-v1" / folder / f"{version}.json"
        delta = json.loads(path.read_text())["delta"] if path.exists() else None
        if delta is not None:  # the first version's record has none: its anchor has
            manifest = json.loads(delta["manifest_json"])
            sums = {e["name"]: e["target"]["checksum"] for e in manifest["tensors"]}
            sums.update({a["name"]: a["checksum"] for a in manifest["target_layout"]["aux_files"]})
            return sums
    raise AssertionError(f"no legacy record of {version}")


def _checksums(checkpoint: Path) -> dict[str, str]:
    opened = open_checkpoint(checkpoint)
    sums = {}
    for name, ref in opened.tensors.items():
        with ref.path.open("rb") as f:
            f.seek(ref.begin)
            sums[name] = xxhash.xxh3_128_hexdigest(f.read(ref.end - ref.begin))
    sums.update({n: xxhash.xxh3_128_hexdigest(p.read_bytes()) for n, p in opened.aux_files.items()})
    return sums


def test_upgrade_store_converts_a_v1_store(v1_store: Path, tmp_path: Path) -> None:
    store = Store(f"file://{v1_store}")
    with pytest.raises(InvalidManifestError, match="deltaroll upgrade-store STORE MODEL"):
        store.log("tiny")

    result = deltaroll_json("upgrade-store", f"file://{v1_store}", "tiny")
    assert set(result["versions"]) == {*V1_NAMES.values(), "d1bc5ec089594a8a9ca6c83b7a65c55b"}
    assert set(result["names"]) == {"step-0", "step-1", "step-2"}

    log = Store(f"file://{v1_store}").log("tiny")
    assert {e.version for e in log} == set(result["versions"].values())
    for name, old in V1_NAMES.items():
        new = result["versions"][old]
        assert Store(f"file://{v1_store}").resolve("tiny", name) == new
        pulled = tmp_path / name
        Store(f"file://{v1_store}").pull("tiny", name, pulled)
        assert _checksums(pulled) == _v1_target_checksums(v1_store, old)
    # The v1 objects are untouched, the records kept aside; a second run changes nothing.
    assert {p.name for p in (V1_STORE / "tiny" / "objects").iterdir()} <= {
        p.name for p in (v1_store / "tiny" / "objects").iterdir()
    }
    again = deltaroll_json("upgrade-store", f"file://{v1_store}", "tiny")
    assert again["versions"] == result["versions"]


def test_an_upgrade_interrupted_midway_finishes_when_run_again(
    v1_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the first version is pushed (the v1 records already set aside): nothing v1
    is lost, and running it again converts everything."""
    store = Store(f"file://{v1_store}")
    real_push = store.push
    pushed: list[Path] = []

    def push_once(*args: object, **kwargs: object) -> object:
        if pushed:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C, or the pod was evicted
        pushed.append(Path(str(args[1])))
        return real_push(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "push", push_once)
    with pytest.raises(KeyboardInterrupt):
        upgrade_model(store, "tiny")
    assert len(Store(f"file://{v1_store}").log("tiny")) == 1  # only v2 records are live
    legacy = v1_store / "tiny" / upgrade_module.LEGACY
    assert len(list(legacy.rglob("*.json"))) == 4  # three versions, one anchor

    monkeypatch.undo()
    result = upgrade_model(Store(f"file://{v1_store}"), "tiny")
    assert len(result.versions) == 3 and len(result.names) == 3
    assert len(Store(f"file://{v1_store}").log("tiny")) == 3


def test_a_damaged_v1_object_is_refused_by_name(v1_store: Path) -> None:
    """A v1 payload damaged in the store is refused before the version it rebuilds is pushed."""
    record = v1_store / "tiny" / "versions" / "d1bc5ec089594a8a9ca6c83b7a65c55b.json"
    manifest = json.loads(json.loads(record.read_text())["delta"]["manifest_json"])
    (sparse,) = [e for e in manifest["tensors"] if e["kind"] == "sparse"]
    payload = v1_store / "tiny" / "objects" / sparse["delta_object"]
    payload.write_bytes(b"\0" * payload.stat().st_size)
    with pytest.raises(
        InvalidManifestError, match=f"v1 object {sparse['delta_object']} is corrupt"
    ):
        upgrade_model(Store(f"file://{v1_store}"), "tiny")
    assert len(Store(f"file://{v1_store}").log("tiny")) == 1  # the anchor, before the damage


def test_a_gc_during_an_upgrade_is_refused_and_loses_nothing(
    v1_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gc between two of the upgrade's pushes (another Store, as another process or the
    operator after a ModelDelta deletion would be): on main it found the v1 objects referenced
    by nothing live (their records set aside, their v2 versions not pushed yet), deleted them,
    and the upgrade failed halfway. The upgrade holds the publish lease: gc is refused; after
    it, gc runs and every version still pulls to its v1 content."""
    uri = f"file://{v1_store}"
    store = Store(uri, cache_dir=tmp_path / "cache")
    real_push = store.push
    refusals: list[str] = []

    def push_then_gc(*args: object, **kwargs: object) -> object:
        result = real_push(*args, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(StoreBusyError, match="publish to 'tiny'.*in progress") as caught:
            Store(uri, cache_dir=tmp_path / "gc-cache").gc("tiny", None, grace=timedelta(0))
        refusals.append(str(caught.value))
        return result

    monkeypatch.setattr(store, "push", push_then_gc)
    result = upgrade_model(store, "tiny")
    assert len(refusals) == len(result.versions) == 3

    after = Store(uri, cache_dir=tmp_path / "cache")
    assert after.gc("tiny", None, grace=timedelta(0)).deleted_versions == []
    for old, new in result.versions.items():
        pulled = tmp_path / "pulled" / old
        after.pull("tiny", new, pulled)
        assert _checksums(pulled) == _v1_target_checksums(v1_store, old)


def test_a_v1_chunk_list_longer_than_its_tensor_is_refused_before_anything_is_fetched(
    v1_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v1 anchor whose tensor lists one chunk many times (a decompression bomb: on main every
    listed chunk was decompressed and joined before the size was checked) is refused by its
    count, before any chunk is read."""
    record_path = v1_store / "tiny" / "anchors" / f"{V1_NAMES['step-0']}.json"
    record = json.loads(record_path.read_text())
    manifest = json.loads(record["delta"]["manifest_json"])
    carried = manifest["tensors"][0]
    carried["target_chunks"] = carried["target_chunks"] * 1000
    text = json.dumps(manifest)
    record["delta"]["manifest_json"] = text
    record["delta"]["manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    record_path.write_text(json.dumps(record))
    fetched: list[str] = []
    real_object = upgrade_module._object

    def counted(catalog: object, model: str, digest: str) -> bytes:
        fetched.append(digest)
        return real_object(catalog, model, digest)  # type: ignore[arg-type]

    monkeypatch.setattr(upgrade_module, "_object", counted)
    with pytest.raises(InvalidManifestError, match="1 chunk.*its manifest lists 1000"):
        upgrade_model(Store(f"file://{v1_store}"), "tiny")
    assert carried["target_chunks"][0] not in fetched


@pytest.mark.parametrize("changed", [0.0, 0.01, 0.6])  # unchanged, sparse, dense
def test_a_changed_tensor_is_rebuilt_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: float
) -> None:
    """The rebuild streams the base through windows (made small here, so a tensor spans many)
    and writes exactly what applying the whole delta to the whole tensor gives."""
    monkeypatch.setattr(upgrade_module, "_WINDOW_BYTES", 4096)
    rng = np.random.default_rng(7)
    base = rng.integers(0, 1 << 16, 100_003, dtype=np.uint16)
    target = base.copy()
    flipped = rng.choice(base.shape[0], int(changed * base.shape[0]), replace=False)
    target[flipped] ^= rng.integers(1, 1 << 16, flipped.shape[0], dtype=np.uint16)
    encoded = encode_tensor_delta(base, target)
    expected_kind = {0.0: "unchanged", 0.01: "sparse", 0.6: "dense"}[changed]
    assert encoded.kind.value == expected_kind
    store = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")
    digest = hashlib.sha256(encoded.payload).hexdigest()
    store.catalog.write_bytes(keys.object_key("m", digest), encoded.payload, create_only=True)
    (tmp_path / "base.bin").write_bytes(b"header" + base.tobytes())
    entry = {"kind": encoded.kind.value, "delta_object": digest,
             "changed_elements": encoded.changed_elements,
             "total_elements": encoded.total_elements}  # fmt: skip
    source = upgrade_module._TensorFile(tmp_path / "base.bin", 6, np.dtype(np.uint16), base.nbytes)
    with (tmp_path / "out.bin").open("wb") as out:
        checksum = upgrade_module._patched_copy(store.catalog, "m", entry, source, out)
    assert (tmp_path / "out.bin").read_bytes() == target.tobytes()
    assert checksum == xxhash.xxh3_128_hexdigest(target.tobytes())
