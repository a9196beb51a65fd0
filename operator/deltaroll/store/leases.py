"""Per-model leases that keep gc's deletions and a publish's last step apart.

A publish reuses objects the store already has and checks that its parent exists; gc deletes the
objects and versions nothing references. Interleaved, a publish could end with a manifest that
points at what gc just deleted, and a grace period on object ages cannot help an object that
was old when it was reused. So each side announces itself before it looks at the other: a
publish writes ``<model>/leases/publish-<id>.json`` and then waits while a gc lease exists; gc
writes ``<model>/leases/gc-<id>.json`` and then yields if any publish lease exists. A listing
sees every write that finished before it (S3, the file backend and the Hub are read-after-write
consistent), so of two that overlap at least one sees the other: their critical sections never
run at once (Dekker's mutual exclusion, over a bucket). A publish holds its lease only for its
last step (check again what it reuses, check the parent, write the manifest), so gc waits
seconds, not an upload.

A lease whose holder died is ignored once it is older than its time to live; a holder that
outlives half of it stops before its next write (:meth:`Lease.check`), so it never acts on a
lease another process may already ignore.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from deltaroll.store import keys
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import StoreBusyError
from deltaroll.store.manifests import now

LeaseKind = Literal["gc", "publish"]
#: How long a lease counts without its holder; a holder stops after half of it.
LEASE_TTL: Final = timedelta(minutes=10)
#: How long a publish waits for a gc to finish, and how often it looks.
GC_WAIT: Final = timedelta(minutes=2)
_POLL_S: Final = 0.2


@dataclass
class Lease:
    key: str
    what: str
    ttl: timedelta
    started: float  # time.monotonic() when it was last written

    def check(self) -> None:
        """Refuse to go on once half the lease is spent (others ignore it after all of it)."""
        if time.monotonic() - self.started > self.ttl.total_seconds() / 2:
            raise StoreBusyError(
                f"{self.what} took longer than half its {self.ttl} lease and stopped before its "
                "next write; run it again"
            )

    def renew(self, catalog: Catalog) -> None:
        """Write the lease again once a quarter of it is spent (others count its age from the
        last write), so a long holder keeps it; after half, :meth:`check` refuses instead."""
        if time.monotonic() - self.started > self.ttl.total_seconds() / 4:
            self.check()
            started = time.monotonic()
            catalog.write_bytes(self.key, _record(self.key), create_only=False)
            self.started = started


@contextmanager
def publishing(catalog: Catalog, model: str, *, ttl: timedelta = LEASE_TTL) -> Iterator[Lease]:
    """Hold a publish lease on ``model`` once no gc holds one (waiting up to :data:`GC_WAIT`)."""
    with _held(catalog, model, "publish", ttl) as lease:
        deadline = time.monotonic() + GC_WAIT.total_seconds()
        while _others(catalog, model, "gc", ttl):
            if time.monotonic() > deadline:
                raise StoreBusyError(
                    f"a gc of {model!r} in {catalog.backend.uri} held the store for over "
                    f"{GC_WAIT}; nothing was published: publish again"
                )
            time.sleep(_POLL_S)
        yield lease


@contextmanager
def collecting(catalog: Catalog, model: str, *, ttl: timedelta = LEASE_TTL) -> Iterator[Lease]:
    """Hold a gc lease on ``model``; yield to any publish in progress (:class:`StoreBusyError`)."""
    with _held(catalog, model, "gc", ttl) as lease:
        if _others(catalog, model, "publish", ttl):
            raise StoreBusyError(
                f"a publish to {model!r} in {catalog.backend.uri} is in progress; nothing was "
                "deleted: run gc again shortly"
            )
        yield lease


@contextmanager
def _held(catalog: Catalog, model: str, kind: LeaseKind, ttl: timedelta) -> Iterator[Lease]:
    key = keys.lease_key(model, kind, uuid.uuid4().hex)
    started = time.monotonic()
    catalog.write_bytes(key, _record(key), create_only=True)
    try:
        yield Lease(key, f"{kind} of {model!r}", ttl, started)
    finally:
        catalog.delete([key])


def _record(key: str) -> bytes:
    """A lease's content, for people reading the store (its age is the write's own time)."""
    return json.dumps({"lease": key, "written": now().isoformat()}).encode()


def _others(catalog: Catalog, model: str, kind: LeaseKind, ttl: timedelta) -> bool:
    """Whether a live lease of ``kind`` exists (one of unknown age counts as live)."""
    prefix = keys.leases_prefix(model)
    cutoff = now() - ttl
    return any(
        info.key.startswith(f"{prefix}{kind}-")
        and (info.modified is None or info.modified > cutoff)
        for info in catalog.list_keys(prefix)  # a folder's listing, on the file backend
    )
