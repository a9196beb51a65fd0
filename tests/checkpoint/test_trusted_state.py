"""An in-place apply from a trusted state reads only what changes, and trusts nothing it cannot
prove: an edited record, a replaced file, another boot, a network file system, a write-back
error, or base values that do not match the delta's change digest each send it back to a full
hash or refuse it, with nothing changed."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from deltaroll.checkpoint import (
    apply_delta,
    apply_inplace,
    diff_checkpoints,
    journal,
    open_checkpoint,
    read_delta_manifest,
    reader,
    state,
)
from deltaroll.checkpoint.errors import (
    ChangesMismatchError,
    InterruptedApplyError,
    WrongBaseError,
)
from deltaroll.checkpoint.state import TrustedState, make_durable, state_path, trusted_state

from .helpers import tree_digest


@pytest.fixture
def chain(steps: dict[str, list[Path]], tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(weights at v0, v2's files, delta v0->v1, delta v1->v2) of real AdamW steps."""
    v0, v1, v2 = steps["sharded"]
    diff_checkpoints(v0, v1, tmp_path / "d01")
    diff_checkpoints(v1, v2, tmp_path / "d12")
    return v0, v2, tmp_path / "d01", tmp_path / "d12"


class Counted:
    """Wraps a function of a module and counts its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.calls = 0
        original = getattr(module, name)

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def _first_apply(chain: tuple[Path, Path, Path, Path]) -> Path:
    weights, _, d01, _ = chain
    assert apply_delta(weights, d01, in_place=True).changed
    return weights


def test_second_apply_reads_only_the_changed_tensors(
    chain: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, v2, _, d12 = chain
    full_hash = Counted(monkeypatch, apply_inplace, "checkpoint_digests")
    _first_apply(chain)
    assert full_hash.calls == 1  # a fresh copy has no record: hashed once, then recorded
    streamed = Counted(monkeypatch, apply_inplace, "dense_windows")
    gathered = Counted(monkeypatch, apply_inplace, "checked_changes")
    assert apply_delta(weights, d12, in_place=True).changed
    assert full_hash.calls == 1  # the record vouched for v1: nothing hashed in full
    kinds = [e.kind for e in read_delta_manifest(d12).tensors]
    assert streamed.calls == kinds.count("dense") > 0  # read (and logged) a window at a time
    assert gathered.calls == kinds.count("sparse") > 0  # only their changed elements
    assert tree_digest(weights) == tree_digest(v2)
    record = trusted_state(open_checkpoint(weights))
    assert record is not None and record.version == read_delta_manifest(d12).target_version
    assert record.durable  # the trust check made the patched files durable first


def test_an_apply_reads_its_journal_once_and_each_header_once(
    chain: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-version fixed cost: the journal is read once (it was three times: the bounds
    check, the durability of the last apply, the apply), each weight file's header once (it
    was up to four times), and the redo log just written is not read back whole to check."""
    weights, v2, d01, d12 = chain
    assert apply_delta(weights, d01, in_place=True, durable=False).changed  # journal left
    loads = Counted(monkeypatch, journal.Journal, "load")
    headers = Counted(monkeypatch, reader, "read_header")
    log_read_back = Counted(monkeypatch, journal.Journal, "changes")
    make_durable(weights)  # what the agent does once the engine reloaded
    assert loads.calls == 1
    loads.calls = headers.calls = 0
    assert apply_delta(weights, d12, in_place=True).changed
    assert loads.calls == 1
    assert headers.calls == len(open_checkpoint(weights).weight_files)
    assert log_read_back.calls == 0
    assert tree_digest(weights) == tree_digest(v2)


def test_reverse_apply_from_trusted_state_restores_the_base(
    chain: tuple[Path, Path, Path, Path], steps: dict[str, list[Path]]
) -> None:
    weights, _, d01, _ = chain
    original = tree_digest(steps["sharded"][0])
    _first_apply(chain)
    assert apply_delta(weights, d01, in_place=True, reverse=True).changed
    assert tree_digest(weights) == original


def _reseal(checkpoint: Path, **changes: object) -> None:
    """Rewrite the record as someone who knows the format would: fresh fingerprints, valid seal."""
    path = state_path(checkpoint)
    record = TrustedState.model_validate_json(path.read_bytes())
    opened = open_checkpoint(checkpoint)
    record = record.model_copy(
        update={
            "fingerprints": {n: state._fingerprint(p) for n, p in state._files(opened).items()},
            **changes,
        }
    )
    state._write(checkpoint, record)


def test_hand_edited_record_is_ignored(
    chain: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, v2, _, d12 = chain
    _first_apply(chain)
    path = state_path(weights)
    document = json.loads(path.read_bytes())
    name = next(iter(document["tensors"]))
    document["tensors"][name] = "0" * 64
    path.write_text(json.dumps(document))
    assert trusted_state(open_checkpoint(weights)) is None
    full_hash = Counted(monkeypatch, apply_inplace, "checkpoint_digests")
    assert apply_delta(weights, d12, in_place=True).changed
    assert full_hash.calls == 1
    assert tree_digest(weights) == tree_digest(v2)


def test_weight_file_replaced_with_same_size_is_detected(
    chain: tuple[Path, Path, Path, Path], steps: dict[str, list[Path]]
) -> None:
    weights, _, _, d12 = chain
    _first_apply(chain)
    shard = sorted(weights.glob("model-*.safetensors"))[0]
    replacement = (steps["sharded"][2] / shard.name).read_bytes()  # v2's shard, same size
    assert len(replacement) == shard.stat().st_size
    tmp = shard.with_name(".replacement")
    tmp.write_bytes(replacement)
    os.replace(tmp, shard)
    assert trusted_state(open_checkpoint(weights)) is None
    before = tree_digest(weights)
    with pytest.raises(WrongBaseError, match="nothing was changed"):
        apply_delta(weights, d12, in_place=True)
    assert tree_digest(weights) == before


def test_values_at_changed_positions_must_match_the_change_digest(
    chain: tuple[Path, Path, Path, Path],
) -> None:
    """A record that vouches for bytes that are not there (a stale record, a file system that
    lies) is caught by the change digest: the apply refuses and writes nothing."""
    weights, _, _, d12 = chain
    _first_apply(chain)
    entry = next(e for e in read_delta_manifest(d12).tensors if e.kind == "sparse")
    ref = open_checkpoint(weights).tensors[entry.name]
    from deltaroll.checkpoint.objects import ObjectDir
    from deltaroll.checkpoint.packs import PackReader
    from deltaroll.checkpoint.reader import read_tensor_bits
    from deltaroll.checkpoint.transform import encoded_tensor
    from deltaroll.codec import decode_changes
    from deltaroll.codec.gaps import gaps_to_positions

    payload = PackReader(ObjectDir(d12), read_delta_manifest(d12).objects)
    changes = decode_changes(encoded_tensor(entry, payload), read_tensor_bits(ref).dtype)
    position = int(gaps_to_positions(changes.gaps, changes.total)[0])
    with open(ref.path, "r+b") as f:
        f.seek(ref.begin + position * (ref.nbytes // max(ref.numel, 1)))
        value = f.read(ref.nbytes // ref.numel)
        f.seek(ref.begin + position * (ref.nbytes // max(ref.numel, 1)))
        f.write(bytes([value[0] ^ 0x01]) + value[1:])
    _reseal(weights)
    before = tree_digest(weights)
    with pytest.raises(ChangesMismatchError, match=entry.name):
        apply_delta(weights, d12, in_place=True)
    assert tree_digest(weights) == before
    assert not (weights / ".deltaroll-journal").exists()


def test_another_boot_voids_the_record(
    chain: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _first_apply(chain)
    assert trusted_state(open_checkpoint(weights)) is not None
    other_boot = tmp_path / "boot_id"
    other_boot.write_text("00000000-0000-0000-0000-000000000000\n")
    monkeypatch.setattr(state, "BOOT_ID_PATH", other_boot)
    assert trusted_state(open_checkpoint(weights)) is None


def test_network_file_systems_are_always_hashed(
    chain: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "filesystem_type", lambda path: "nfs4")
    weights = _first_apply(chain)
    assert not state_path(weights).exists()


def test_filesystem_type_reads_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "40 22 0:40 / /mnt/models rw,relatime - nfs4 server:/models rw\n"
        "41 22 0:41 / /mnt/models-cache rw - fuse.s3fs s3fs rw\n"
    )
    monkeypatch.setattr(state, "MOUNTINFO_PATH", mountinfo)
    assert state.filesystem_type(Path("/mnt/models/llama")) == "nfs4"
    assert state.filesystem_type(Path("/mnt/models-cache/x")) == "fuse.s3fs"
    assert state.filesystem_type(Path("/work/x")) == "ext4"
    assert not state.fingerprints_trustworthy(Path("/mnt/models/llama"))
    assert state.fingerprints_trustworthy(Path("/work/x"))


def test_write_back_error_voids_the_record(
    chain: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, _, d01, d12 = chain
    assert apply_delta(weights, d01, in_place=True, durable=False).changed
    assert not TrustedState.model_validate_json(state_path(weights).read_bytes()).durable

    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size > 4096:  # weight files
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(InterruptedApplyError):  # the journal stays, the record goes
        apply_delta(weights, d12, in_place=True)
    assert not state_path(weights).exists()  # a later fsync would not report the lost pages
    monkeypatch.undo()
    # The apply run again writes every value again; the next one proves its base in full.
    assert apply_delta(weights, d01, in_place=True).changed
    full_hash = Counted(monkeypatch, apply_inplace, "checkpoint_digests")
    assert apply_delta(weights, d12, in_place=True).changed
    assert full_hash.calls == 0  # the resumed apply recorded its target


def test_make_durable_marks_the_record(chain: tuple[Path, Path, Path, Path]) -> None:
    weights, _, d01, _ = chain
    assert apply_delta(weights, d01, in_place=True, durable=False).changed
    assert make_durable(weights)
    assert TrustedState.model_validate_json(state_path(weights).read_bytes()).durable
    (weights / "config.json").write_text("{}")
    assert not make_durable(weights)  # the files moved on: nothing to vouch


def test_gather_and_scatter_cross_windows_and_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltaroll.checkpoint import scatter as windows
    from deltaroll.codec.gaps import PositionCursor, positions_to_gaps

    monkeypatch.setattr(windows, "WINDOW_BYTES", 4096)
    monkeypatch.setattr(windows, "CHUNK_POSITIONS", 100)  # several chunks in a window
    rng = np.random.default_rng(1)
    data = rng.integers(0, 2**16, size=50_000, dtype=np.uint16)
    path = tmp_path / "t.bin"
    path.write_bytes(b"x" * 13 + data.tobytes())  # an unaligned offset, like a tensor's
    span = windows.TensorSpan(path, 13, data.size, np.dtype(np.uint16))
    positions = np.sort(rng.choice(data.size, size=3000, replace=False)).astype(np.int64)
    positions[-1] = data.size - 1  # the last element, in the last (short) window
    gaps = positions_to_gaps(positions)
    seen: list[np.ndarray] = []
    known = np.empty(positions.size, np.uint16)
    windows.gather(span, PositionCursor(gaps, data.size), known, lambda p: seen.append(p.copy()))
    assert np.array_equal(known, data[positions])
    assert np.array_equal(np.concatenate(seen), positions)  # every chunk shown once, in order
    values = rng.integers(0, 2**16, size=positions.size, dtype=np.uint16)
    windows.scatter(
        span, PositionCursor(gaps, data.size), lambda first, n: values[first : first + n]
    )
    data[positions] = values
    assert path.read_bytes() == b"x" * 13 + data.tobytes()


def test_a_copy_written_by_apply_o_needs_no_full_hash(
    chain: tuple[Path, Path, Path, Path],
    steps: dict[str, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apply -o writes every byte from checked data, so the copy (an agent's build from an
    anchor, a pull) starts with a record: its first in-place apply reads only what changes."""
    v0, v2, d01, d12 = chain
    copy = tmp_path / "copy"
    apply_delta(v0, d01, out_dir=copy)
    full_hash = Counted(monkeypatch, apply_inplace, "checkpoint_digests")
    assert apply_delta(copy, d12, in_place=True).changed
    assert full_hash.calls == 0
    assert tree_digest(copy) == tree_digest(v2)


def test_gather_without_populating_the_page_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel refuses MADV_POPULATE_READ (before Linux 5.14), a dense window simply
    faults its pages in."""
    from deltaroll.checkpoint import scatter as windows
    from deltaroll.codec.gaps import PositionCursor, positions_to_gaps

    monkeypatch.setattr(windows, "MADV_POPULATE_READ", -1)  # EINVAL, like an old kernel
    data = np.arange(20_000, dtype=np.uint16)
    path = tmp_path / "t.bin"
    path.write_bytes(data.tobytes())
    positions = np.arange(0, data.size, 3, dtype=np.int64)  # dense: many changes per page
    known = np.empty(positions.size, np.uint16)
    cursor = PositionCursor(positions_to_gaps(positions), data.size)
    windows.gather(windows.TensorSpan(path, 0, data.size, data.dtype), cursor, known, len)
    assert np.array_equal(known, data[positions])
