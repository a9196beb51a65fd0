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


def reconcile_owner(
    store: Store,
    event: WatchEvent,
    owner_key: StorageKey,
    owners: ResourceType,
    reconcile: Callable[[str, str], None],
) -> None:
    """Call ``reconcile(namespace, name)`` for the owner an event concerns: the owner itself
    (unless deleted: its pods go with it), or the owner that controls the pod that changed."""
    meta = event.obj["metadata"]
    if event.key == owner_key:
        if event.type != "DELETED":
            reconcile(meta["namespace"], meta["name"])
        return
    owner = controller_uid(event.obj)
    if owner is None:
        return
    for obj in store.list_objects(owners, meta["namespace"]):
        if obj["metadata"]["uid"] == owner:
            reconcile(meta["namespace"], obj["metadata"]["name"])


def controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None
