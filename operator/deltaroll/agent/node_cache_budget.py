"""The node cache's disk budget: the objects it keeps, least recently used first out.

The daemon is the only writer of its folder, so it can keep the account in memory: rebuilt from
the files (oldest modification first) when it starts, touched on every read, and trimmed after
every fill until the total fits. A file removed while an agent still reads it stays readable
through the daemon's open descriptor until the read ends (POSIX unlink semantics).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from pathlib import Path

import structlog

from deltaroll.store.names import is_digest

log = structlog.get_logger(__name__)


class DiskBudget:
    """Objects under ``directory`` (``<partition>/<sha256>``), at most ``max_bytes`` in all."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[Path, int] = OrderedDict()
        found = []
        for path in directory.glob("*/*"):
            if is_digest(path.name) and path.is_file():
                info = path.stat()
                found.append((info.st_mtime_ns, path, info.st_size))
        for _, path, size in sorted(found):
            self._sizes[path] = size
        self.total = sum(self._sizes.values())

    def used(self, path: Path) -> None:
        """``path`` was read: it is the last to go."""
        if path in self._sizes:
            self._sizes.move_to_end(path)

    def added(self, path: Path, size: int) -> list[Path]:
        """``path`` entered the cache; removes (and returns) the least recently used objects
        until the total fits, ``path`` itself last of all."""
        self.total += size - self._sizes.pop(path, 0)
        self._sizes[path] = size
        evicted = []
        while self.total > self.max_bytes and len(self._sizes) > 1:
            oldest, oldest_size = self._sizes.popitem(last=False)
            self.total -= oldest_size
            with contextlib.suppress(FileNotFoundError):
                oldest.unlink()
            evicted.append(oldest)
        if evicted:
            log.info("node_cache.evicted", objects=len(evicted), total=self.total)
        return evicted

    def forget(self, path: Path) -> None:
        """``path`` was removed (it failed its check)."""
        self.total -= self._sizes.pop(path, 0)
