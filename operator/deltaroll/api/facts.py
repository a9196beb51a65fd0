"""What a published version is: the numbers a ModelDelta reports.

The worker writes these into its termination message and the controller into status; both read
them from the store's manifests (:func:`deltaroll.store.facts.version_facts`) rather than from the
worker's own counters, so the status shows exactly what ``deltaroll log`` shows (``delta_bytes``
is the same sum of object sizes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class VersionFacts:
    """A published version: its parent and the size of what a puller downloads."""

    version: str
    parent: str | None
    changed_fraction: float | None  # of the target's elements that differ; None for a root
    delta_bytes: int  # the delta from the parent (a root: its anchor), as `deltaroll log` counts
    full_bytes: int | None  # the checkpoint's files on disk; None when no manifest describes it
    anchored: bool
    #: When the version's manifest was written (RFC 3339, the publisher's clock): the operator
    #: believes a Job published it only if this is no earlier than the Job itself.
    published_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
