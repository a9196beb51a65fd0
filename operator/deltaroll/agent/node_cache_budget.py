"""The node cache's disk budget: per namespace and in all, least recently used first out.

Tenants share one node's disk, and any bytes are "the object" of their own digest, so a pod can
fill the cache with bytes it chose. What one namespace keeps is therefore bounded by its own
budget, and a fill that takes a namespace over it evicts only that namespace's objects; when
all namespaces together exceed the node's budget, the namespace holding the most gives way
first. A tenant can thus push another's objects out only while that other holds more than it,
never below the node's budget divided among the namespaces using it. No object is larger than
``object_max_bytes``.

The daemon is the only writer of its folder, so it keeps the account in memory: rebuilt from
the files (``<namespace>/<partition>/<sha256>``, oldest modification first) when it starts,
touched on every read, trimmed after every fill. A file removed while an agent still reads it
stays readable through the daemon's open descriptor until the read ends (POSIX unlink).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import structlog

from deltaroll.store.names import is_digest

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Limits:
    """The node cache's budgets, in bytes."""

    total: int
    namespace: int
    object: int

    @classmethod
    def of(cls, total: int, namespace: int | None = None, object: int | None = None) -> Limits:  # noqa: A002
        """Defaults: a namespace may hold half the node's budget, an object an eighth."""
        namespace = min(total, namespace or max(1, total // 2))
        return cls(total, namespace, min(namespace, object or max(1, total // 8)))


class DiskBudget:
    """Objects under ``directory`` (``<namespace>/<partition>/<sha256>``) within ``limits``."""

    def __init__(self, directory: Path, limits: Limits) -> None:
        self.limits = limits
        self._sizes: dict[str, OrderedDict[Path, int]] = {}
        self._totals: dict[str, int] = {}
        found = []
        for path in directory.glob("*/*/*"):
            if is_digest(path.name) and path.is_file():
                info = path.stat()
                found.append((info.st_mtime_ns, path, info.st_size))
        for _, path, size in sorted(found):
            self._put(path.parent.parent.name, path, size)
        self.total = sum(self._totals.values())

    def used(self, namespace: str, path: Path) -> None:
        """``path`` was read: it is the last of its namespace to go."""
        if path in self._sizes.get(namespace, {}):
            self._sizes[namespace].move_to_end(path)

    def added(self, namespace: str, path: Path, size: int) -> list[Path]:
        """``path`` entered ``namespace``'s share; removes (and returns) least recently used
        objects, of that namespace while it is over its budget, then of the namespace holding
        the most while the node is over its budget; ``path`` itself last of all."""
        self.total += size - self._forget(namespace, path)
        self._put(namespace, path, size)
        evicted = []
        while self._totals[namespace] > self.limits.namespace and len(self._sizes[namespace]) > 1:
            evicted.append(self._evict(namespace))
        while self.total > self.limits.total:
            largest = max(self._totals, key=lambda ns: (self._totals[ns], ns == namespace))
            if largest == namespace and len(self._sizes[namespace]) == 1:
                break
            evicted.append(self._evict(largest))
        if evicted:
            log.info("node_cache.evicted", objects=len(evicted), total=self.total)
        return evicted

    def forget(self, namespace: str, path: Path) -> None:
        """``path`` was removed (it failed its check)."""
        self.total -= self._forget(namespace, path)

    def held(self, namespace: str) -> int:
        return self._totals.get(namespace, 0)

    def _put(self, namespace: str, path: Path, size: int) -> None:
        self._sizes.setdefault(namespace, OrderedDict())[path] = size
        self._totals[namespace] = self._totals.get(namespace, 0) + size

    def _forget(self, namespace: str, path: Path) -> int:
        size = self._sizes.get(namespace, OrderedDict()).pop(path, 0)
        if namespace in self._totals:
            self._totals[namespace] -= size
            if not self._sizes[namespace]:
                del self._sizes[namespace], self._totals[namespace]
        return size

    def _evict(self, namespace: str) -> Path:
        oldest, size = self._sizes[namespace].popitem(last=False)
        self._totals[namespace] -= size
        self.total -= size
        if not self._sizes[namespace]:
            del self._sizes[namespace], self._totals[namespace]
        with contextlib.suppress(FileNotFoundError):
            oldest.unlink()
        return oldest
