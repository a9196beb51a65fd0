"""The weights directory on the pod's volume, and the sibling folders that make swaps safe.

Beside ``/models/weights`` (the directory the engine loads) the agent keeps, on the same
filesystem so renames are atomic:

- ``.weights.building``  a fresh copy being built from an anchor (garbage after a crash),
- ``.weights.built``     a fresh copy that verified, waiting to be swapped in,
- ``.weights.retired``   the previous copy, between the two renames of a swap,
- ``.weights.deltas``    delta directories rebuilt from the object cache for one apply,
- ``.deltaroll-cache``   the verified object cache (default), so a restarted agent resumes,
- ``.weights.name-sequences.json``  the highest signed sequence accepted per name
  (:mod:`deltaroll.store.name_sequences`), so a restarted agent still refuses a name moved back.

Deltas between versions are applied to ``weights`` in place, behind the checkpoint layer's
journal; only a plan that starts from nothing (an anchor) builds a fresh copy and swaps it in.
Whatever the moment a crash happens, :meth:`WeightsVolume.recover` leaves ``weights`` either
absent, a whole verified version, or a journaled in-place apply that can be finished.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog

from deltaroll.checkpoint.journal import Journal, JournalState
from deltaroll.checkpoint.staging import fsync_directory
from deltaroll.checkpoint.state import make_durable, proven_version

log = structlog.get_logger(__name__)

DEFAULT_CACHE_NAME = ".deltaroll-cache"


class WeightsVolume:
    """Paths and crash recovery around one weights directory."""

    def __init__(self, weights_dir: Path, cache_dir: Path | None = None) -> None:
        self.weights = Path(weights_dir).absolute()
        parent, name = self.weights.parent, self.weights.name
        self.building = parent / f".{name}.building"
        self.built = parent / f".{name}.built"
        self.retired = parent / f".{name}.retired"
        self.deltas = parent / f".{name}.deltas"
        self.name_sequences = parent / f".{name}.name-sequences.json"
        self.cache_dir = Path(cache_dir) if cache_dir else parent / DEFAULT_CACHE_NAME

    def recover(self) -> None:
        """Finish a swap a crash interrupted and drop half-built copies. Idempotent."""
        self.weights.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (self.building, self.deltas):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.built.is_dir():
            self.install_built()
        elif self.retired.is_dir() and not self.weights.exists():
            os.replace(self.retired, self.weights)  # the swap never got its new copy: undo
        shutil.rmtree(self.retired, ignore_errors=True)

    def install_built(self) -> None:
        """Swap the verified ``built`` copy in place of ``weights`` (two renames, then cleanup)."""
        if self.weights.exists():
            shutil.rmtree(self.retired, ignore_errors=True)
            os.replace(self.weights, self.retired)
        os.replace(self.built, self.weights)
        fsync_directory(self.weights.parent)
        shutil.rmtree(self.retired, ignore_errors=True)
        log.info("agent.swapped_in", weights=str(self.weights))

    def unfinished_apply(self) -> JournalState | None:
        """The in-place apply a crash interrupted, if any (its journal is in ``weights``)."""
        if not self.weights.is_dir():
            return None
        return Journal(self.weights).load()

    def version(self) -> str | None:
        """The version id of ``weights``, or None if there is none: read from its trusted-state
        record when that still holds, else by hashing every tensor (which records it)."""
        if not self.weights.exists():
            return None
        return proven_version(self.weights)

    def make_durable(self) -> None:
        """fsync the patched weights and mark their record durable (after the pod is Ready)."""
        if self.weights.exists() and not make_durable(self.weights):
            log.info("agent.weights_not_recorded", weights=str(self.weights))

    def discard_weights(self) -> None:
        """Retire ``weights`` when it cannot be used (its apply can no longer be finished)."""
        if self.weights.exists():
            shutil.rmtree(self.retired, ignore_errors=True)
            os.replace(self.weights, self.retired)
            shutil.rmtree(self.retired, ignore_errors=True)

    def fresh_delta_dir(self, index: int) -> Path:
        """An empty place to rebuild one delta directory from the cache."""
        path = self.deltas / str(index)
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
