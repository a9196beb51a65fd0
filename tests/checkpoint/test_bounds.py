"""Bounded inputs: every size a manifest claims is checked before anything is allocated or
written (issue 16, finding 2: "a 4 KB delta wrote a 512 MiB config.json")."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import blake3
import pytest
import torch
import zstandard

from deltaroll.checkpoint import apply_delta, diff_checkpoints, read_delta_manifest
from deltaroll.checkpoint import chunks as chunks_module
from deltaroll.checkpoint.errors import CorruptDeltaError, DeltaTooLargeError
from deltaroll.checkpoint.journal import Journal, JournalState
from fixtures.checkpoints import read_tensors, write_checkpoint

from .forge import reseal_versions, rewrite_manifest
from .helpers import tree_digest

CHUNK = 64 << 20


@pytest.fixture
def delta(steps: dict[str, list[Path]], tmp_path: Path) -> Path:
    diff_checkpoints(steps["sharded"][0], steps["sharded"][1], tmp_path / "delta")
    return tmp_path / "delta"


def _zeros_digest(nbytes: int) -> str:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    block = bytes(CHUNK)
    for start in range(0, nbytes, CHUNK):
        hasher.update(memoryview(block)[: min(CHUNK, nbytes - start)])
    return hasher.hexdigest()


def _add_object(delta: Path, document: dict[str, Any], data: bytes) -> list[int]:
    """Append ``data`` as a new object of the delta; returns its blob."""
    digest = hashlib.sha256(data).hexdigest()
    (delta / "objects" / digest).write_bytes(data)
    document["objects"].append({"digest": digest, "size": len(data)})
    return [len(document["objects"]) - 1, 0, len(data)]


def _bomb(delta: Path, listings: int) -> int:
    """The PoC: ``config.json`` of the target made of one zstd frame of 64 MiB of zeros
    (about 2 KB) listed ``listings`` times, with the digest and version ids to match."""
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(CHUNK))
    assert len(frame) < 4096
    size = listings * CHUNK

    def edit(document: dict[str, Any]) -> None:
        blob = _add_object(delta, document, frame)
        aux = next(a for a in document["target_layout"]["aux_files"] if a["name"] == "config.json")
        aux.update(size=size, chunks=[blob] * listings, digest=_zeros_digest(size))
        reseal_versions(document)

    rewrite_manifest(delta, edit)
    return size


def test_the_repeated_chunk_bomb_is_refused_before_anything_is_written(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path
) -> None:
    """The PoC of the review: on main, `apply -o` wrote a 512 MiB config.json from 2 KB of
    payload (and an in-place apply staged it), holding all of it in memory first."""
    _bomb(delta, listings=8)
    base = steps["sharded"][0]
    before = tree_digest(base)
    for attempt in ({"out_dir": tmp_path / "out"}, {"in_place": True}):
        with pytest.raises(CorruptDeltaError, match=r"config\.json.*chunks.*can hold") as caught:
            apply_delta(base, delta, **attempt)  # type: ignore[arg-type]
        assert "target_layout.aux_files" in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert tree_digest(base) == before
    assert not Journal(base).root.exists()  # nothing for a restart to resume into


def test_one_frame_cannot_claim_more_than_zstd_can_expand_it_to(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path
) -> None:
    """A 64 MiB chunk needs at least ~2 KB of zstd frame (4 bytes per 128 KiB block): a
    100-byte blob claiming it is refused without decompressing anything."""

    def edit(document: dict[str, Any]) -> None:
        blob = _add_object(delta, document, b"\0" * 100)
        aux = next(a for a in document["target_layout"]["aux_files"] if a["name"] == "config.json")
        aux.update(size=CHUNK, chunks=[blob], digest="0" * 64)
        reseal_versions(document)

    rewrite_manifest(delta, edit)
    with pytest.raises(CorruptDeltaError, match=r"chunks\[0\].*100 bytes"):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_chunk_list_must_have_exactly_the_chunks_its_size_needs(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, extra: int
) -> None:
    def edit(document: dict[str, Any]) -> None:
        aux = next(a for a in document["target_layout"]["aux_files"] if a["name"] == "config.json")
        chunk = aux["chunks"][0]
        aux.update(size=3 * CHUNK, chunks=[chunk] * (3 + extra))
        reseal_versions(document)

    rewrite_manifest(delta, edit)
    with pytest.raises(CorruptDeltaError, match=r"config\.json.*3 chunk"):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")


def test_a_carried_tensor_shape_bomb_in_an_anchor_is_refused(
    steps: dict[str, list[Path]], tmp_path: Path
) -> None:
    """A fresh pod builds from an anchor: every tensor is carried, sized by its shape. A shape
    of 1 GiB backed by one frame of zeros listed 16 times is refused before allocation."""
    anchor = tmp_path / "anchor"
    diff_checkpoints(None, steps["sharded"][0], anchor)
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(CHUNK))

    def edit(document: dict[str, Any]) -> None:
        blob = _add_object(anchor, document, frame)
        tensors = document["tensors"]
        tensors["target"]["shape"][0] = [1 << 29]
        tensors["target"]["dtype"][0] = "BF16"
        tensors["total_elements"][0] = 1 << 29
        tensors["target_chunks"][0] = [blob] * 16
        reseal_versions(document)

    rewrite_manifest(anchor, edit)
    name = read_delta_manifest(anchor).tensors[0].name
    with pytest.raises(CorruptDeltaError, match=rf"tensors\[{name!r}\]\.target_chunks"):
        apply_delta(None, anchor, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_honest_delta_is_refused_when_the_destination_lacks_the_disk(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltaroll.checkpoint import bounds

    monkeypatch.setattr(bounds, "free_disk", lambda path: 1000)
    with pytest.raises(DeltaTooLargeError, match=r"writes up to.*free.*out"):
        apply_delta(steps["sharded"][0], delta, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_honest_delta_is_refused_when_a_buffer_exceeds_the_memory_budget(
    steps: dict[str, list[Path]], delta: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELTAROLL_MEMORY_BUDGET", "16")
    base = steps["sharded"][0]
    before = tree_digest(base)
    with pytest.raises(DeltaTooLargeError, match=r"needs a buffer.*DELTAROLL_MEMORY_BUDGET"):
        apply_delta(base, delta, in_place=True)
    assert tree_digest(base) == before
    monkeypatch.setenv("DELTAROLL_MEMORY_BUDGET", "lots")
    with pytest.raises(DeltaTooLargeError, match="DELTAROLL_MEMORY_BUDGET"):
        apply_delta(base, delta, in_place=True)


def test_a_pending_journal_of_a_refused_delta_is_not_resumed(
    steps: dict[str, list[Path]], delta: Path
) -> None:
    """A journal committed for a delta that the checks now refuse (an older Deltaroll wrote
    it) is not finished into the bomb: the error says the checkpoint must be restored."""
    _bomb(delta, listings=8)
    base = steps["sharded"][0]
    manifest = read_delta_manifest(delta)
    assert manifest.base_version is not None
    Journal(base).save(
        JournalState(
            manifest_digest=manifest.manifest_digest,
            direction="forward",
            from_version=manifest.base_version,
            to_version=manifest.target_version,
        )
    )
    with pytest.raises(CorruptDeltaError, match="unfinished apply of this delta.*restore"):
        apply_delta(base, delta, in_place=True)
    assert not (base / "config.json").stat().st_size > CHUNK


def test_repeated_chunks_of_an_honest_checkpoint_are_stored_so_that_it_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new all-zero tensor spans several identical chunks: the writer stores the frame again
    rather than list it twice beyond what it can hold, so the honest delta passes the bound."""
    monkeypatch.setattr(chunks_module, "CHUNK_BYTES", 1 << 20)
    base = write_checkpoint(tmp_path / "base", {"w": torch.ones(8, dtype=torch.bfloat16)})
    tensors = {"w": torch.ones(8, dtype=torch.bfloat16), "zeros": torch.zeros(1 << 21)}
    target = write_checkpoint(tmp_path / "target", tensors)
    diff_checkpoints(base, target, tmp_path / "delta")
    entry = next(e for e in read_delta_manifest(tmp_path / "delta").tensors if e.name == "zeros")
    assert len(entry.target_chunks) == 8 and len(set(entry.target_chunks)) > 1
    apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "out")
    assert torch.equal(read_tensors(tmp_path / "out")["zeros"], tensors["zeros"])


def _sparse_row(delta: Path) -> tuple[int, int, int]:
    """(row, changed, total elements) of the delta's sparse tensor with the most changes."""
    entries = read_delta_manifest(delta).tensors
    rows = [i for i, e in enumerate(entries) if e.kind == "sparse"]
    row = max(rows, key=lambda i: entries[i].changed_elements)
    return row, entries[row].changed_elements, entries[row].total_elements


def _sparse_need(changed: int) -> int:
    """What the budget counts for a sparse bf16 tensor's changes: old and new values (2 bytes
    each), a position and an exception rank (8 bytes each) per change."""
    return changed * (2 * 2 + 16)


def test_the_arrays_of_a_sparse_tensors_changes_count_against_the_memory_budget(
    steps: dict[str, list[Path]], delta: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding (c): on main the positions and values of a sparse tensor were allocated from its
    count, never budgeted, so this honest delta applied within a budget it exceeds."""
    row, changed, _ = _sparse_row(delta)
    monkeypatch.setenv("DELTAROLL_MEMORY_BUDGET", str(_sparse_need(changed) - 1))
    base = steps["sharded"][0]
    before = tree_digest(base)
    name = read_delta_manifest(delta).tensors[row].name
    with pytest.raises(DeltaTooLargeError, match=rf"tensors\[{name!r}\]\.changed_elements"):
        apply_delta(base, delta, in_place=True)
    assert tree_digest(base) == before and not Journal(base).root.exists()


def test_a_manifest_lying_about_a_sparse_tensors_changes_is_refused_before_decoding(
    steps: dict[str, list[Path]], delta: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket writer claims every element of a tensor changed (the tensor's shape kept, so it
    still fits the checkpoint): within a budget the honest delta fits, the claim is refused from
    the manifest alone; so is a claim of more changes than the tensor's payload can hold."""
    row, changed, total = _sparse_row(delta)
    assert changed < total
    monkeypatch.setenv("DELTAROLL_MEMORY_BUDGET", str(_sparse_need(total) - 1))
    base = steps["sharded"][0]
    before = tree_digest(base)
    apply_delta(base, delta, out_dir=tmp_path / "honest")  # fits the budget

    def claim_all(document: dict[str, Any]) -> None:
        document["tensors"]["changed_elements"][row] = total

    rewrite_manifest(delta, claim_all)
    for attempt in ({"out_dir": tmp_path / "out"}, {"in_place": True}):
        with pytest.raises(DeltaTooLargeError, match=r"changed_elements needs a buffer"):
            apply_delta(base, delta, **attempt)  # type: ignore[arg-type]
    assert tree_digest(base) == before and not (tmp_path / "out").exists()

    monkeypatch.delenv("DELTAROLL_MEMORY_BUDGET")

    def claim_more_than_the_payload(document: dict[str, Any]) -> None:
        tensors = document["tensors"]
        huge = 1 << 40
        for side in ("base", "target"):
            tensors[side]["shape"][row] = [huge]
        tensors["changed_elements"][row] = tensors["total_elements"][row] = huge
        reseal_versions(document)

    rewrite_manifest(delta, claim_more_than_the_payload)
    with pytest.raises(CorruptDeltaError, match=r"changed_elements claims.*payload can hold"):
        apply_delta(base, delta, out_dir=tmp_path / "out")
    assert tree_digest(base) == before and not (tmp_path / "out").exists()
