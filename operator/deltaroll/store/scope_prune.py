"""Removing the scopes of a shared cache directory that nobody uses any more.

A scope is one store's objects fetched with one set of credentials
(:mod:`deltaroll.store.cache_scope`); when credentials rotate or a pod moves to another store, its
old scope is never read again and would keep its disk forever. A scope is *unused* when no live
lease names anything in it (its holders are gone: the kernel dropped their locks) and nobody took
its lock shared for :data:`~deltaroll.api.object_cache.UNUSED_SCOPE_TTL` (its lock file's
mtime). Both are checked under the scope's lock held exclusively, and the scope is renamed away
before that lock is released, so a process starting to use it either made its lease first (the
scope is kept) or finds it gone and fetches into a fresh one. An object some checkpoint or delta
directory hard-links keeps its bytes there; only the cache's name goes.

Never removed: the caller's own scope, a scope with a live lease or a lease that cannot be read, a
link, anything not named like a scope.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path

import structlog

from deltaroll.api.object_cache import LOCK_NAME, REMOVING_PREFIX, UNUSED_SCOPE_TTL
from deltaroll.store.cache_leases import CacheLeases
from deltaroll.store.cache_scope import is_scope_name

log = structlog.get_logger(__name__)


def prune_unused_scopes(own: Path, *, unused_for: timedelta = UNUSED_SCOPE_TTL) -> list[str]:
    """Remove every unused scope beside ``own`` (a scope's directory) in its cache directory,
    and what an interrupted removal left; returns the scopes removed."""
    top = own.parent
    removed: list[str] = []
    try:
        entries = list(top.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(REMOVING_PREFIX) and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif _is_other_scope(entry, own) and _set_aside_if_unused(entry, unused_for):
            removed.append(entry.name)
    if removed:
        log.info("store.cache_scopes_removed", directory=str(top), scopes=removed)
    return removed


def _is_other_scope(entry: Path, own: Path) -> bool:
    return entry.name != own.name and is_scope_name(entry.name) and not entry.is_symlink()


def _set_aside_if_unused(scope: Path, unused_for: timedelta) -> bool:
    """Delete ``scope`` if it is unused (checked and renamed away under its exclusive lock)."""
    if not _unused_since(scope, unused_for):  # a scope in use is not even locked
        return False
    leases = CacheLeases(scope)
    aside = scope.parent / f"{REMOVING_PREFIX}{uuid.uuid4().hex}"
    with leases.locked(exclusive=True):
        if not _unused_since(scope, unused_for) or leases.live() != set():
            return False
        os.rename(scope, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _unused_since(scope: Path, unused_for: timedelta) -> bool:
    """Whether nobody took the scope's lock shared for ``unused_for`` (False once the scope is
    gone: another process removed it, maybe while we waited for its lock)."""
    try:
        last_use = (scope / LOCK_NAME).stat().st_mtime
    except FileNotFoundError:
        return False
    return time.time() - last_use >= unused_for.total_seconds()
