"""The object cache's layout on disk: the contract between every process that shares one.

Agents, pulls and worker Jobs on one node may share a cache directory (a node volume; the fleet
builds its node cache on it). Each reads and writes it by these rules:

- ``<top>/.scope-salt``: 32 random bytes, written once (link of a finished file, so never torn).
- ``<top>/<scope>/``: the objects one store URI and one set of credentials may fetch; ``scope`` is
  the hex of a salted scrypt over both (the credentials are never written anywhere), so an agent
  only ever sees objects that it could have fetched itself.
- ``<scope>/<sha256>``: an object, entered by renaming a fsynced, verified file into place; a
  reader still checks it (once per process per file identity) before it trusts it.
- ``<scope>/.partial/<sha256>.<random>``: a download in progress.
- ``<scope>/.lock``: the scope's lock (``flock``): shared while entering an object or changing a
  lease, exclusive while pruning or removing a bad file. Its mtime is the scope's last use: each
  shared lock sets it.
- ``<scope>/.leases/<random>.json``: one per live cache user, :class:`CacheLease`, held with an
  exclusive ``flock`` for as long as its holder lives; a lease nobody holds is dead and removed.
  Pruning removes only what no live lease names.
- A scope no live lease names and nobody used for :data:`UNUSED_SCOPE_TTL` (rotated credentials,
  another store) is removed whole by any process that prunes its own scope: under the scope's
  lock held exclusively it is renamed to ``<top>/.removing-<random>`` and then deleted (a folder
  under that prefix is what a crash left mid-removal: anyone deletes it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SALT_NAME: Final = ".scope-salt"
SALT_BYTES: Final = 32
PARTIAL_DIR: Final = ".partial"
LOCK_NAME: Final = ".lock"
LEASES_DIR: Final = ".leases"
LEASE_SUFFIX: Final = ".json"
REMOVING_PREFIX: Final = ".removing-"
#: A scope nobody holds and nobody used for this long is removed (its objects are fetched again).
UNUSED_SCOPE_TTL: Final = timedelta(days=1)
#: A lease file larger than this is not read; its holder's scope is then not pruned at all.
MAX_LEASE_BYTES: Final = 16 << 20

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class CacheLease(BaseModel):
    """What one live process names as in use in its scope of the cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    holder: str = Field(description="who holds it (host and process id), for people reading it")
    objects: list[Sha256Hex] = Field(description="sha256 of every object pruning must keep")
