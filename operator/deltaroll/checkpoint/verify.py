"""Does a checkpoint on disk match one side of a delta? (``deltaroll verify``)

Compares every tensor's name, dtype, shape and digest, and the auxiliary files the delta
records; reports every difference rather than stopping at the first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deltaroll.checkpoint.digests import checkpoint_digests, tensor_digest, version_of
from deltaroll.checkpoint.journal import Journal
from deltaroll.checkpoint.manifest import read_delta_manifest
from deltaroll.checkpoint.reader import open_checkpoint
from deltaroll.checkpoint.transform import OnBytes, Side

_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class VerifyReport:
    """``matches`` is True only if every tensor and recorded auxiliary file matches."""

    checkpoint: str
    side: str
    expected_version: str | None
    actual_version: str
    matches: bool
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_checkpoint(
    path: Path, delta_dir: Path, *, side: Side = "target", on_bytes: OnBytes | None = None
) -> VerifyReport:
    """Check the checkpoint at ``path`` against ``side`` of the delta in ``delta_dir``."""
    manifest = read_delta_manifest(Path(delta_dir))
    checkpoint = open_checkpoint(Path(path))
    digests = checkpoint_digests(checkpoint, on_bytes)
    problems = []
    expected = {e.name: s for e in manifest.tensors if (s := e.side(side)) is not None}
    for name in sorted(expected.keys() - checkpoint.tensors.keys()):
        problems.append(f"missing tensor {name!r}")
    for name in sorted(checkpoint.tensors.keys() - expected.keys()):
        problems.append(f"unexpected tensor {name!r}")
    for name in sorted(expected.keys() & checkpoint.tensors.keys()):
        want, ref = expected[name], checkpoint.tensors[name]
        if (want.dtype, tuple(want.shape)) != (ref.dtype, ref.shape):
            problems.append(
                f"tensor {name!r} is {ref.dtype}{list(ref.shape)}, expected "
                f"{want.dtype}{want.shape}"
            )
        elif digests[name] != want.digest:
            problems.append(f"tensor {name!r} has different values")
    layout = manifest.layout(side)
    if layout is not None and checkpoint.kind == "directory":
        for aux in layout.aux_files:
            actual = checkpoint.aux_files.get(aux.name)
            if actual is None:
                problems.append(f"missing file {aux.name}")
            elif tensor_digest(actual.read_bytes()) != aux.digest:
                problems.append(f"file {aux.name} differs")
    journal = Journal(Path(path))
    if journal.pending():
        problems.append(f"an in-place apply is unfinished (journal {journal.root})")
    return VerifyReport(
        checkpoint=str(path),
        side=side,
        expected_version=manifest.version(side),
        actual_version=version_of(checkpoint, digests),
        matches=not problems,
        problems=problems[:_MAX_PROBLEMS],
    )
