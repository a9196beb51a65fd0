"""In-process watches on the store for the sandbox's controllers (no HTTP in between)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import structlog

from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.store import Obj, StorageKey, Store, WatchEvent

log = structlog.get_logger("deltaroll_sandbox.controllers")


def resource(store: Store, group: str, version: str, plural: str) -> ResourceType:
    rtype = store.registry.lookup(group, version, plural)
    if rtype is None:  # bundled by kmock: only a broken install gets here
        raise LookupError(f"the sandbox does not serve {plural}.{version}.{group}")
    return rtype


def guarded(handler: Callable[[WatchEvent], None], event: WatchEvent) -> None:
    """Run a controller's handler; a bad object is logged, never the end of the controller."""
    try:
        handler(event)
    except Exception:
        meta = event.obj.get("metadata", {})
        log.exception(
            "controller.event_failed",
            key=event.key,
            name=meta.get("name"),
            namespace=meta.get("namespace"),
        )


async def events(store: Store, keys: set[StorageKey]) -> AsyncIterator[WatchEvent]:
    """Synthetic ADDED events for what exists, then every write to the given resources."""
    sub, _ = store.subscribe(None)
    try:
        for key, obj in list(store.all_objects()):
            if key in keys:
                yield WatchEvent(store.resource_version, key, "ADDED", obj, None)
        while True:
            event = await sub.queue.get()
            if event.key in keys:
                yield event
    finally:
        store.unsubscribe(sub)


#: What the Deployment and DaemonSet controllers never read of a pod: annotations (an agent
#: reports through them several times a version) and the server's own bookkeeping.
NOT_READ_BY_OWNERS = frozenset({"annotations", "resourceVersion", "managedFields"})


def reconcile_owner(
    store: Store,
    event: WatchEvent,
    owner_key: StorageKey,
    owners: ResourceType,
    reconcile: Callable[[str, str], None],
    *,
    unread: frozenset[str] = frozenset(),
) -> None:
    """Call ``reconcile(namespace, name)`` for the owner an event concerns: the owner itself
    (unless deleted: its pods go with it), or the owner that controls the pod that changed,
    unless only the pod's metadata fields in ``unread`` changed (the owner's controller never
    reads them: that reconcile would change nothing)."""
    meta = event.obj["metadata"]
    if event.key == owner_key:
        if event.type != "DELETED":
            reconcile(meta["namespace"], meta["name"])
        return
    owner = controller_uid(event.obj)
    if owner is None or _changed_only(event, unread):
        return
    for obj in store.peek_objects(owners, meta["namespace"]):
        if obj["metadata"]["uid"] == owner:
            reconcile(meta["namespace"], obj["metadata"]["name"])


def controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _changed_only(event: WatchEvent, fields: frozenset[str]) -> bool:
    """Whether ``event`` modified only the metadata ``fields`` of its object."""
    if not fields or event.type != "MODIFIED" or event.old is None:
        return False
    return _without(event.obj, fields) == _without(event.old, fields)


def _without(obj: Obj, fields: frozenset[str]) -> Obj:
    meta = {k: v for k, v in obj["metadata"].items() if k not in fields}
    return {**obj, "metadata": meta}
