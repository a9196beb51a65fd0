"""In-place apply killed for real (SIGKILL) at many points, then resumed by running it again.

The delta used changes the layout of one shard (a vocabulary resize: that shard is rebuilt and
renamed in) and patches the other shard at its byte offsets, and rewrites config and index
files, so every phase of the journal is exercised. After each kill, running the same command
again must finish the job with a checkpoint byte-identical to the target.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from deltaroll.checkpoint import diff_checkpoints, verify_checkpoint
from deltaroll.checkpoint.journal import Journal
from deltaroll.checkpoint.reader import open_checkpoint
from deltaroll.checkpoint.state import trusted_state
from fixtures.checkpoints import read_tensors, write_checkpoint
from fixtures.cli import DELTAROLL

from .helpers import tree_digest


@pytest.fixture
def pair(steps: dict[str, list[Path]], tmp_path: Path) -> tuple[Path, Path, Path]:
    """(base, target, delta): sharded checkpoints where shard 1 changes layout (vocabulary
    resize) and shard 2 is patched in place: densely (trained step 1 -> 2) for most tensors,
    sparsely (1 % of elements) for the LM head, so both kinds of redo record are used."""
    base = steps["sharded"][1]
    tensors = read_tensors(steps["sharded"][2])
    lm_head = read_tensors(base)["lm_head.weight"].clone()
    lm_head.view(-1)[::97] += 1
    tensors["lm_head.weight"] = lm_head
    embed = tensors["embed_tokens.weight"]
    tensors["embed_tokens.weight"] = torch.cat(
        [embed, torch.ones(4, embed.shape[1], dtype=embed.dtype)]
    )
    ordered = {name: tensors[name] for name in read_tensors(base)}
    target = write_checkpoint(
        tmp_path / "target",
        ordered,
        layout="sharded",
        config={"model_type": "tinylm", "vocab": 260},
    )
    diff_checkpoints(base, target, tmp_path / "delta")
    return base, target, tmp_path / "delta"


def run_apply(
    base: Path, delta: Path, *extra: str, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DELTAROLL_CRASH_AT", None)
    if crash_at:
        env["DELTAROLL_CRASH_AT"] = crash_at
    return subprocess.run(
        [str(DELTAROLL), "apply", str(base), str(delta), "--in-place", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "crash_at",
    [
        "journal-created",
        "file-staged",
        "tensor-staged:1",
        "tensor-staged@lm_head.weight",
        "scatter-half:1",
        "scatter-half@lm_head.weight",
        "tensor-patched:2",
        "patched",
        "file-renamed",
        "state-recorded:2",  # the first vouches for the base after its full hash
        "apply-durable",  # the written files fsynced, the journal not yet removed
        "journal-committed",
    ],
)
def test_killed_apply_resumes_to_the_target(pair: tuple[Path, Path, Path], crash_at: str) -> None:
    base, target, delta = pair
    killed = run_apply(base, delta, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (base / ".deltaroll-journal").is_dir()

    resumed = run_apply(base, delta)
    assert resumed.returncode == 0, resumed.stderr
    assert tree_digest(base) == tree_digest(target)
    assert not (base / ".deltaroll-journal").exists()
    assert verify_checkpoint(base, delta).matches

    again = run_apply(base, delta, "--json")
    assert again.returncode == 0 and '"changed": false' in again.stdout
    assert tree_digest(base) == tree_digest(target)


def test_killed_twice_in_the_middle_of_a_tensor_write(pair: tuple[Path, Path, Path]) -> None:
    base, target, delta = pair
    sparse_tensor = "scatter-half@lm_head.weight"
    assert run_apply(base, delta, crash_at=sparse_tensor).returncode == -signal.SIGKILL
    records = {change.tensor: change for change in Journal(base).changes()}
    assert not records["lm_head.weight"].whole  # only the changed elements
    assert trusted_state(open_checkpoint(base)) is None  # nothing vouches for a torn state
    # The restart writes the redo log again; kill it in the middle of that write too.
    assert run_apply(base, delta, crash_at=sparse_tensor).returncode == -signal.SIGKILL
    assert not verify_checkpoint(base, delta).matches
    assert run_apply(base, delta).returncode == 0
    assert tree_digest(base) == tree_digest(target)


def test_killed_reverse_apply_resumes_to_the_base(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    base, _, delta = pair
    original = tree_digest(base)
    assert run_apply(base, delta).returncode == 0
    assert (
        run_apply(base, delta, "--reverse", crash_at="tensor-patched:2").returncode
        == -signal.SIGKILL
    )
    assert run_apply(base, delta, "--reverse").returncode == 0
    assert tree_digest(base) == original


def test_unfinished_apply_blocks_other_applies(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    base, target, delta = pair
    assert run_apply(base, delta, crash_at="tensor-patched:2").returncode == -signal.SIGKILL
    reverse = run_apply(base, delta, "--reverse")
    assert reverse.returncode != 0
    assert reverse.stderr.startswith("error: ") and "unfinished in-place apply" in reverse.stderr
    assert len(reverse.stderr.strip().splitlines()) == 1
    assert run_apply(base, delta).returncode == 0
    assert tree_digest(base) == tree_digest(target)


def test_journal_lives_beside_a_single_file_checkpoint(
    steps: dict[str, list[Path]], tmp_path: Path
) -> None:
    base, target = steps["file"][0], steps["file"][1]
    diff_checkpoints(base, target, tmp_path / "delta")
    assert (
        run_apply(base, tmp_path / "delta", crash_at="tensor-patched:2").returncode
        == -signal.SIGKILL
    )
    assert (base.parent / f".{base.name}.deltaroll-journal").is_dir()
    assert run_apply(base, tmp_path / "delta").returncode == 0
    assert base.read_bytes() == target.read_bytes()
    assert not (base.parent / f".{base.name}.deltaroll-journal").exists()
    shutil.rmtree(tmp_path / "delta")


def test_concurrent_in_place_apply_is_refused(pair: tuple[Path, Path, Path]) -> None:
    import fcntl

    base, target, delta = pair
    before = tree_digest(base)
    fd = os.open(base, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = run_apply(base, delta)
    finally:
        os.close(fd)
    assert busy.returncode != 0 and "another in-place apply is running" in busy.stderr
    assert tree_digest(base) == before
    assert run_apply(base, delta).returncode == 0
    assert tree_digest(base) == tree_digest(target)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_killed_while_the_shards_change_resumes(
    steps: dict[str, list[Path]], tmp_path: Path, direction: str
) -> None:
    """Two shards become one file (and back): killed between renames, the directory is between
    layouts (a shard gone, the index stale or missing); running the apply again finishes it."""
    sharded, single = steps["sharded"][0], steps["single"][1]
    diff_checkpoints(sharded, single, tmp_path / "delta")
    if direction == "reverse":
        shutil.rmtree(sharded)
        shutil.copytree(single, sharded)
    extra = ("--reverse",) if direction == "reverse" else ()
    killed = run_apply(sharded, tmp_path / "delta", *extra, crash_at="file-renamed:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_apply(sharded, tmp_path / "delta", *extra)
    assert resumed.returncode == 0, resumed.stderr
    side = "base" if direction == "reverse" else "target"
    assert verify_checkpoint(sharded, tmp_path / "delta", side=side).matches


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"lm_head.weight"', b'"lm_head.weighx"'),  # a tensor the delta does not change
        (b'"whole": false', b'"whole": true '),  # a sparse change logged as a whole tensor
    ],
)
def test_a_resealed_redo_log_that_does_not_fit_the_delta_is_refused(
    pair: tuple[Path, Path, Path], old: bytes, new: bytes
) -> None:
    """The log's digest only proves it is the one that was written; each record must still
    name a tensor the delta changes, in the form its entry has, before a value is written."""
    import blake3

    base, _, delta = pair
    assert run_apply(base, delta, crash_at="journal-created").returncode == -signal.SIGKILL
    log = Journal(base).root / "changes.bin"
    body = log.read_bytes()[:-32]
    assert body.count(old) == 1
    body = body.replace(old, new)
    log.write_bytes(body + blake3.blake3(body).digest())
    before = tree_digest(base)
    resumed = run_apply(base, delta)
    assert resumed.returncode != 0 and "does not hold as recorded" in resumed.stderr
    assert tree_digest(base) == before
