"""Whether an event shows a reconcile anything its ModelDeployment's last one did not read.

A reconcile records what it read: the ModelDeployment (generation, labels, its annotations but
Kopf's own, being deleted) and each selected pod (:func:`~.pods.read_state`). An event showing an
object exactly as that reconcile read it asks for nothing that reconcile did not do, so it starts
none. At the operator's start this is most of them: the ModelDeployment watch's and the pod
watch's first lists each send every object, and whichever comes second finds its reconcile done
(one reconcile per ModelDeployment, not one more per selected pod). Any change in what a reconcile
reads, or a failed reconcile (nothing recorded), still reconciles.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from deltaroll.api.annotations import KOPF_PREFIX
from deltaroll.controllers.modeldeployment.pods import read_state

News = tuple[str | None, int]
"""(the pod an event is about, or None for the ModelDeployment itself; its state digest)."""


def deployment_state(body: Mapping[str, Any]) -> int:
    """A digest of what a reconcile reads of its ModelDeployment besides its status (alike from
    a GET and from Kopf's watch); Kopf's bookkeeping annotations are left out."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return hash(
        (
            meta.get("generation"),
            tuple(sorted((meta.get("labels") or {}).items())),
            tuple(sorted((k, v) for k, v in annotations.items() if not _kopf_owned(k))),
            bool(meta.get("deletionTimestamp")),
        )
    )


def _kopf_owned(annotation: str) -> bool:
    return annotation.startswith(f"{KOPF_PREFIX}/")


class LastRead:
    """Per ModelDeployment, what its last finished reconcile read (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[Hashable, tuple[int, dict[str, int]]] = {}

    def already_read(self, key: Hashable, news: News) -> bool:
        """The last finished reconcile of ``key`` read the object of ``news`` in that state."""
        with self._lock:
            found = self._read.get(key)
        if found is None:
            return False
        pod, state = news
        return (found[0] if pod is None else found[1].get(pod)) == state

    def forget(self, key: Hashable) -> None:
        """A reconcile starts (or the ModelDeployment went): nothing is known read until it ends."""
        with self._lock:
            self._read.pop(key, None)

    def record(
        self, key: Hashable, body: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
    ) -> None:
        """A reconcile of ``key`` finished, having read ``body`` and ``pods``."""
        read = {str(p["metadata"]["name"]): read_state(p) for p in pods}
        with self._lock:
            self._read[key] = (deployment_state(body), read)
