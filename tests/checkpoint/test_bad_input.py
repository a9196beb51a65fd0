"""Bad input loses nothing: corrupt deltas, wrong bases, malformed files, hostile names."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from deltaroll.checkpoint import apply_delta, diff_checkpoints, read_delta_manifest
from deltaroll.checkpoint.errors import (
    CorruptDeltaError,
    DeltaTooLargeError,
    InvalidCheckpointError,
    OutputExistsError,
    UnsafeNameError,
    UnsupportedFormatError,
    WrongBaseError,
)
from deltaroll.checkpoint.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    OLDER_MANIFEST_NAME,
)

from .forge import reseal_versions, rewrite_manifest
from .helpers import flip_byte, tree_digest


@pytest.fixture
def delta(steps: dict[str, list[Path]], tmp_path: Path) -> Path:
    diff_checkpoints(steps["sharded"][0], steps["sharded"][1], tmp_path / "delta")
    return tmp_path / "delta"


def _largest_payload(delta: Path) -> Path:
    """The object holding the largest tensor payload."""
    manifest = read_delta_manifest(delta)
    blob = max((e.payload for e in manifest.tensors if e.payload), key=lambda b: b.length)
    return delta / "objects" / manifest.objects[blob.object].digest


@pytest.mark.parametrize("offset", [0, 100, -1])
def test_corrupt_payload_names_the_object_and_leaves_nothing(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, offset: int
) -> None:
    base = steps["sharded"][0]
    payload = _largest_payload(delta)
    flip_byte(payload, offset)
    before = tree_digest(base)
    with pytest.raises(CorruptDeltaError, match=payload.name):
        apply_delta(base, delta, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))
    with pytest.raises(CorruptDeltaError, match=payload.name):
        apply_delta(base, delta, in_place=True)
    assert tree_digest(base) == before


@pytest.mark.parametrize("offset", [20, 0.5, -3])
def test_corrupt_manifest_is_refused(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, offset: float
) -> None:
    """A damaged manifest file (any byte: the frame carries a checksum) is refused by name."""
    base = steps["sharded"][0]
    manifest = delta / MANIFEST_NAME
    flip_byte(manifest, int(offset * manifest.stat().st_size) if offset == 0.5 else int(offset))
    before = tree_digest(base)
    with pytest.raises(CorruptDeltaError, match=re.escape(MANIFEST_NAME)):
        apply_delta(base, delta, out_dir=tmp_path / "out")
    with pytest.raises(CorruptDeltaError, match=re.escape(MANIFEST_NAME)):
        apply_delta(base, delta, in_place=True)
    assert not (tmp_path / "out").exists()
    assert tree_digest(base) == before


def test_a_manifest_frame_without_checksum_or_bounded_size_is_refused(delta: Path) -> None:
    """The frame must carry a checksum and declare its size, within the bound, before a byte is
    decompressed: a small file cannot make a reader allocate gigabytes."""
    import zstandard

    manifest = delta / MANIFEST_NAME
    text = zstandard.ZstdDecompressor().decompress(manifest.read_bytes())
    manifest.write_bytes(zstandard.ZstdCompressor(write_checksum=False).compress(text))
    with pytest.raises(CorruptDeltaError, match="checksum"):
        read_delta_manifest(delta)
    bomb = zstandard.ZstdCompressor(write_checksum=True).compress(b" " * (MAX_MANIFEST_BYTES + 1))
    assert len(bomb) < 1 << 20
    manifest.write_bytes(bomb)
    with pytest.raises(CorruptDeltaError, match="size up to"):
        read_delta_manifest(delta)


def test_wrong_version_is_refused_before_writing(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path
) -> None:
    other = steps["sharded"][2]
    before = tree_digest(other)
    with pytest.raises(WrongBaseError, match="nothing was"):
        apply_delta(other, delta, out_dir=tmp_path / "out")
    with pytest.raises(WrongBaseError, match="nothing was"):
        apply_delta(other, delta, in_place=True)
    with pytest.raises(WrongBaseError):
        apply_delta(other, delta, in_place=True, reverse=True)
    assert not (tmp_path / "out").exists()
    assert tree_digest(other) == before


@pytest.mark.parametrize("damage", ["truncate", "not_safetensors", "offsets_past_end"])
def test_damaged_base_is_refused_before_writing(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, damage: str
) -> None:
    base = steps["sharded"][0]
    shard = base / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "not_safetensors":
        shard.write_bytes(b"<html>not found</html>\n" * 64)
    else:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        name = next(k for k in header if k != "__metadata__")
        start, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = [start + 10**9, end + 10**9]
        raw = json.dumps(header).encode()
        shard.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + header_len :])
    before = tree_digest(base)
    with pytest.raises(InvalidCheckpointError):
        apply_delta(base, delta, out_dir=tmp_path / "out")
    with pytest.raises(InvalidCheckpointError):
        apply_delta(base, delta, in_place=True)
    assert not (tmp_path / "out").exists()
    assert tree_digest(base) == before
    assert not list(base.glob(".deltaroll*"))


def test_existing_output_is_refused(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")
    with pytest.raises(OutputExistsError):
        diff_checkpoints(steps["sharded"][0], steps["sharded"][1], tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def _first(document: dict[str, Any], kind: str | None = None) -> int:
    """The index of the first tensor with a payload (of ``kind``, if given)."""
    tensors = document["tensors"]
    return next(
        i
        for i, payload in enumerate(tensors["payload"])
        if payload and (kind is None or tensors["kind"][i] == kind)
    )


@pytest.mark.parametrize(
    "name",
    ["../../escaped.json", "/tmp/absolute-escape.json", "sub/dir.json", ".hidden", "..", "a\x00b"],
)
@pytest.mark.parametrize("where", ["aux", "weights"])
def test_hostile_file_names_never_write_outside(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, name: str, where: str
) -> None:
    def edit(document: dict[str, Any]) -> None:
        layout = document["target_layout"]
        entry = layout["aux_files"][0] if where == "aux" else layout["files"][0]
        entry["name"] = name

    rewrite_manifest(delta, edit)
    before = tree_digest(tmp_path)
    base = steps["sharded"][0]
    with pytest.raises(UnsafeNameError):
        apply_delta(base, delta, out_dir=tmp_path / "work" / "out")
    with pytest.raises(UnsafeNameError):
        apply_delta(base, delta, in_place=True)
    assert tree_digest(tmp_path) == before
    assert not Path("/tmp/absolute-escape.json").exists()
    assert not (tmp_path / "work").exists()


def test_tensor_names_are_data_not_paths(tmp_path: Path) -> None:
    import torch

    from fixtures.checkpoints import write_checkpoint

    hostile = {"../../evil": torch.ones(3), "/etc/passwd": torch.zeros(2), "a\\b": torch.ones(1)}
    base = write_checkpoint(tmp_path / "ck" / "base", hostile)
    changed = {k: v + 1 for k, v in hostile.items()}
    target = write_checkpoint(tmp_path / "ck" / "target", changed)
    diff_checkpoints(base, target, tmp_path / "ck" / "delta")
    apply_delta(base, tmp_path / "ck" / "delta", out_dir=tmp_path / "ck" / "out")
    apply_delta(base, tmp_path / "ck" / "delta", in_place=True)
    assert tree_digest(base) == tree_digest(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert not (tmp_path / "evil").exists()


def test_missing_object_is_named(steps: dict[str, list[Path]], delta: Path, tmp_path: Path) -> None:
    payload = _largest_payload(delta)
    payload.unlink()
    with pytest.raises(CorruptDeltaError, match=payload.name):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")
    shutil.rmtree(delta / "objects")
    with pytest.raises(CorruptDeltaError):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")


def test_object_digests_are_validated_before_use(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path
) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["objects"].append({"digest": "../../../etc/passwd", "size": 1})

    rewrite_manifest(delta, edit)
    with pytest.raises(CorruptDeltaError, match="invalid object digest"):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")


@pytest.mark.parametrize(
    "blob",
    [[0, 0, 1 << 40], [99, 0, 1], [0, 1 << 40, 1], [-1, 0, 1], [0, -5, 10]],
)
def test_blobs_outside_the_objects_are_refused_before_anything_is_read(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, blob: list[int]
) -> None:
    """A manifest that claims more payload than its objects hold (a size to allocate, an
    offset to read) is refused in O(manifest) time, before any object is opened."""

    def edit(document: dict[str, Any]) -> None:
        document["tensors"]["payload"][_first(document)] = blob

    rewrite_manifest(delta, edit)
    shutil.rmtree(delta / "objects")  # nothing is read: the refusal comes first
    with pytest.raises(CorruptDeltaError, match="outside the delta's objects|greater than or eq"):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")


def test_manifest_lists_exactly_the_objects_on_disk(delta: Path) -> None:
    manifest = read_delta_manifest(delta)
    on_disk = {p.name: p.stat().st_size for p in (delta / "objects").iterdir()}
    assert {o.digest: o.size for o in manifest.objects} == on_disk


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ("deltaroll.delta/v1", "recompute it with `deltaroll diff"),
        ("deltaroll.delta/v3", "upgrade Deltaroll"),
    ],
)
def test_a_manifest_of_another_format_is_refused_with_what_to_do(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, schema: str, says: str
) -> None:
    """An older or newer format, consistently sealed (as that Deltaroll would write it), is
    refused by name before anything is read or written."""
    base = steps["sharded"][0]
    rewrite_manifest(delta, lambda document: document.update(schema=schema))
    before = tree_digest(base)
    for attempt in (
        lambda: apply_delta(base, delta, in_place=True),
        lambda: apply_delta(base, delta, out_dir=tmp_path / "out"),
    ):
        with pytest.raises(UnsupportedFormatError, match=re.escape(says)):
            attempt()
    assert tree_digest(base) == before
    assert not (tmp_path / "out").exists()


def test_a_delta_directory_of_the_older_format_is_refused_with_what_to_do(
    steps: dict[str, list[Path]], delta: Path
) -> None:
    """A v1 delta directory kept its manifest as plain ``manifest.json``."""
    (delta / MANIFEST_NAME).rename(delta / OLDER_MANIFEST_NAME)
    with pytest.raises(UnsupportedFormatError, match="deltaroll diff"):
        apply_delta(steps["sharded"][0], delta, in_place=True)


def test_a_delta_naming_a_version_it_does_not_make_is_refused(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path
) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["target_version"] = "f" * 32

    rewrite_manifest(delta, edit)
    base = steps["sharded"][0]
    before = tree_digest(base)
    with pytest.raises(CorruptDeltaError, match="names target version"):
        apply_delta(base, delta, in_place=True)
    assert tree_digest(base) == before


@pytest.mark.parametrize("lie", ["total", "shape"])
def test_an_entry_that_lies_about_its_size_is_refused_before_allocating(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, lie: str
) -> None:
    """A sparse entry claiming 2**40 elements (its payload's header agreeing) would size
    buffers from the manifest: refused by the manifest's own rules, or against the tensor."""

    def edit(document: dict[str, Any]) -> None:
        index = _first(document, "sparse")
        document["tensors"]["total_elements"][index] = 2**40
        if lie == "shape":  # shape and count agree; the version ids are recomputed to match
            for side in ("base", "target"):
                document["tensors"][side]["shape"][index] = [2**20, 2**20]
            reseal_versions(document)

    rewrite_manifest(delta, edit)
    base = steps["sharded"][0]
    before = tree_digest(base)
    with pytest.raises((CorruptDeltaError, WrongBaseError)):
        apply_delta(base, delta, in_place=True)
    with pytest.raises((CorruptDeltaError, WrongBaseError, DeltaTooLargeError)):
        apply_delta(base, delta, out_dir=tmp_path / "out")  # 2 TiB to write: past the free disk
    assert tree_digest(base) == before
    assert not (base / ".deltaroll-journal").exists()


def test_an_auxiliary_file_that_does_not_match_is_refused_before_the_commit(
    steps: dict[str, list[Path]], delta: Path
) -> None:
    """Everything that can be refused is checked while staging: after the commit an apply only
    finishes, so a bad config file must not be found half-way through."""

    def edit(document: dict[str, Any]) -> None:
        aux = next(a for a in document["target_layout"]["aux_files"] if a["name"] == "config.json")
        aux["digest"] = "0" * 64
        reseal_versions(document)

    rewrite_manifest(delta, edit)
    base = steps["sharded"][0]
    before = tree_digest(base)
    with pytest.raises(CorruptDeltaError, match="config.json"):
        apply_delta(base, delta, in_place=True)
    assert tree_digest(base) == before
    assert not (base / ".deltaroll-journal").exists()
