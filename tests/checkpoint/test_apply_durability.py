"""An in-place apply survives a power loss: its journal goes only after what it wrote is on disk.

A kill -9 keeps the page cache, so the crash tests cannot lose a write; a power loss can. What
makes the apply safe against one is the order of its durable steps, which these tests record
from the real ``os.fsync``, ``os.unlink`` and ``os.open`` calls of a real apply (the writes
themselves are not touched): the journal is durable before the first weight file is opened for
writing, and every file written is fsynced after its last write and before the journal's commit
record is unlinked. A restart after a power loss (another boot id) must replay the journal, not
trust the record of a patch that may not have reached the disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from deltaroll.checkpoint import apply_delta, diff_checkpoints, state
from deltaroll.checkpoint.errors import InterruptedApplyError
from deltaroll.checkpoint.journal import Journal
from deltaroll.checkpoint.state import TrustedState, make_durable, state_path
from fixtures.checkpoints import read_tensors, write_checkpoint

from .helpers import tree_digest

SHARDS = 4


@dataclass(frozen=True)
class Event:
    call: str  # "fsync", "unlink", "open-for-write" or "rename" (path: where to)
    path: str


class Recorder:
    """Records the real calls, in order, and passes each on unchanged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[Event] = []
        real_fsync, real_unlink, real_open = os.fsync, os.unlink, os.open
        real_replace = os.replace

        def fsync(fd: int) -> None:
            self.events.append(Event("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def unlink(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
            self.events.append(Event("unlink", os.fspath(path)))
            real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

        def open_(path: str | os.PathLike[str], flags: int, *args: object, **kw: object) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR):
                self.events.append(Event("open-for-write", os.fspath(path)))
            return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

        def replace(source: str | os.PathLike[str], to: str | os.PathLike[str]) -> None:
            self.events.append(Event("rename", os.fspath(to)))
            real_replace(source, to)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(os, "open", open_)

    def indices(self, call: str, path: Path) -> list[int]:
        where = str(path.resolve())
        return [i for i, e in enumerate(self.events) if e.call == call and e.path == where]

    def first(self, call: str, predicate: object) -> int:
        return next(
            i
            for i, e in enumerate(self.events)
            if e.call == call and predicate(Path(e.path))  # type: ignore[operator]
        )


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(base, target, delta v0->v1, delta v1->v2) of a 4-shard checkpoint in which only the
    tensors of the second shard change, sparsely."""
    generator = torch.Generator().manual_seed(7)
    tensors = {
        f"layers.{i}.weight": torch.randn(64, 64, generator=generator).to(torch.bfloat16)
        for i in range(SHARDS)
    }
    base = write_checkpoint(tmp_path / "v0", tensors, layout="sharded", shards=SHARDS)
    versions = [base]
    for step in (1, 2):
        changed = dict(read_tensors(versions[-1]))
        changed["layers.1.weight"] = changed["layers.1.weight"].clone()
        changed["layers.1.weight"].view(-1)[step::50] += 1
        versions.append(
            write_checkpoint(tmp_path / f"v{step}", changed, layout="sharded", shards=SHARDS)
        )
    diff_checkpoints(versions[0], versions[1], tmp_path / "d01")
    diff_checkpoints(versions[1], versions[2], tmp_path / "d12")
    return base, versions[1], tmp_path / "d01", tmp_path / "d12"


def _shard(checkpoint: Path, index: int) -> Path:
    return checkpoint / f"model-{index + 1:05d}-of-{SHARDS:05d}.safetensors"


def _is_commit_record(path: Path) -> bool:
    """The journal's state.json, or the temp file it is written through."""
    return path.parent.name == ".deltaroll-journal" and path.name.startswith(
        ("state.json", ".state.json.")
    )


def _check_order(recorder: Recorder, weights: Path) -> None:
    written = _shard(weights, 1)
    writes = recorder.indices("open-for-write", written)
    assert writes, "the apply never opened the changed shard for writing"
    committed = recorder.first("fsync", _is_commit_record)
    assert committed < writes[0], "the journal was not durable before the first write"
    unlinked = recorder.first("unlink", _is_commit_record)
    synced_after = [i for i in recorder.indices("fsync", written) if writes[-1] < i < unlinked]
    assert synced_after, "the journal went before the patched file was fsynced"
    # Nothing was renamed into the checkpoint's folder or removed from it: no fsync of the
    # folder (it waits for a journal commit of the whole file system).
    assert not recorder.indices("rename", weights / "config.json")
    assert not [i for i in recorder.indices("fsync", weights) if writes[-1] < i < unlinked]
    for untouched in (0, 2, 3):  # O(files written): no fsync of a shard that did not change
        assert not recorder.indices("fsync", _shard(weights, untouched))


def test_journal_goes_only_after_the_patched_file_is_durable(
    pair: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, target, d01, _ = pair
    recorder = Recorder(monkeypatch)
    assert apply_delta(weights, d01, in_place=True).changed
    monkeypatch.undo()
    _check_order(recorder, weights)
    assert not Journal(weights).root.exists()
    assert TrustedState.model_validate_json(state_path(weights).read_bytes()).durable
    assert tree_digest(weights) == tree_digest(target)


def test_a_renamed_in_file_is_durable_before_the_journal_goes(
    pair: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delta that also changes an auxiliary file renames it in after the patching: the
    folder is fsynced after that rename and before the journal's commit record goes."""
    weights, target, _, _ = pair
    diff_checkpoints(weights, _with_config(target, tmp_path / "v1c"), tmp_path / "d01c")
    recorder = Recorder(monkeypatch)
    assert apply_delta(weights, tmp_path / "d01c", in_place=True).changed
    monkeypatch.undo()
    renamed = recorder.indices("rename", weights / "config.json")
    unlinked = recorder.first("unlink", _is_commit_record)
    assert renamed and renamed[-1] < unlinked
    assert [i for i in recorder.indices("fsync", weights) if renamed[-1] < i < unlinked]
    assert tree_digest(weights) == tree_digest(tmp_path / "v1c")


def _with_config(checkpoint: Path, to: Path) -> Path:
    """A copy of ``checkpoint`` with another config.json."""
    tensors = read_tensors(checkpoint)
    return write_checkpoint(
        to, tensors, layout="sharded", shards=SHARDS, config={"model_type": "tinylm", "v": 2}
    )


def test_deferred_apply_keeps_its_journal_until_make_durable(
    pair: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, target, d01, _ = pair
    recorder = Recorder(monkeypatch)
    assert apply_delta(weights, d01, in_place=True, durable=False).changed
    assert Journal(weights).pending()  # a power loss now replays the redo log
    assert not TrustedState.model_validate_json(state_path(weights).read_bytes()).durable
    assert not any(_is_commit_record(Path(e.path)) for e in recorder.events if e.call == "unlink")
    assert make_durable(weights)
    monkeypatch.undo()
    _check_order(recorder, weights)
    assert not Journal(weights).root.exists()
    assert TrustedState.model_validate_json(state_path(weights).read_bytes()).durable
    assert tree_digest(weights) == tree_digest(target)


def test_next_apply_makes_a_deferred_one_durable_first(
    pair: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    weights, _, d01, d12 = pair
    assert apply_delta(weights, d01, in_place=True, durable=False).changed
    assert apply_delta(weights, d12, in_place=True).changed
    assert not Journal(weights).root.exists()
    v2 = tmp_path / "v2"
    assert tree_digest(weights) == tree_digest(v2)


def test_after_a_power_loss_the_journal_is_replayed_not_trusted(
    pair: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart (another boot id) voids the record of a deferred apply: its journal is what
    finishes it, and another delta is refused until it has."""
    weights, target, d01, d12 = pair
    assert apply_delta(weights, d01, in_place=True, durable=False).changed
    rebooted = tmp_path / "boot_id"
    rebooted.write_text("another-boot\n")
    monkeypatch.setattr(state, "BOOT_ID_PATH", rebooted)
    assert not make_durable(weights)  # nothing proves the patch reached the disk
    assert Journal(weights).pending()
    with pytest.raises(InterruptedApplyError, match="unfinished in-place apply"):
        apply_delta(weights, d12, in_place=True)
    # The journal's redo log is written again; the checkpoint ends at the target.
    assert apply_delta(weights, d01, in_place=True).changed
    assert not Journal(weights).root.exists()
    assert tree_digest(weights) == tree_digest(target)


def test_killed_between_fsync_and_journal_removal_resumes(
    pair: tuple[Path, Path, Path, Path],
) -> None:
    """The agent's path, killed inside make_durable after the fsync: the same apply run again
    finishes (the crash point ``apply-durable``; the CLI path is in test_inplace_crash)."""
    weights, target, d01, _ = pair
    script = (
        "import sys; from pathlib import Path;"
        "from deltaroll.checkpoint import apply_delta;"
        "from deltaroll.checkpoint.state import make_durable;"
        "w = Path(sys.argv[1]); apply_delta(w, Path(sys.argv[2]), in_place=True, durable=False);"
        "make_durable(w)"
    )
    env = {**os.environ, "DELTAROLL_CRASH_AT": "apply-durable"}
    killed = subprocess.run(
        [sys.executable, "-c", script, str(weights), str(d01)], env=env, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert Journal(weights).pending()
    assert not apply_delta(weights, d01, in_place=True).changed
    assert not Journal(weights).root.exists()
    assert tree_digest(weights) == tree_digest(target)
    assert make_durable(weights)  # nothing left to do: the record is durable


def test_apply_out_fsyncs_every_file_before_the_directory_appears(
    pair: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``apply -o`` renames a complete directory into place: every file in it, weights and
    auxiliary files alike, must be on disk first, or a power loss leaves a directory that
    looks complete with an empty config in it."""
    weights, _, d01, _ = pair
    recorder = Recorder(monkeypatch)
    apply_delta(weights, d01, out_dir=tmp_path / "out")
    monkeypatch.undo()
    synced = {Path(e.path).name for e in recorder.events if e.call == "fsync"}
    written = {p.name for p in (tmp_path / "out").iterdir()}
    written.remove(state_path(tmp_path / "out").name)  # a lost record costs a hash, no more
    assert written <= synced
