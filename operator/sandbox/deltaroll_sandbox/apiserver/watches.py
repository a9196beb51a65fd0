"""Watch streams, as kube-apiserver serves them.

``application/json;stream=watch``, one JSON event per line. Without a resourceVersion (or with
``sendInitialEvents=true``) the stream starts with the current objects; with one, it replays what
happened after it (an ``ERROR`` event with code 410 when that is older than the history kept).
``sendInitialEvents`` ends the initial objects with a BOOKMARK annotated
``k8s.io/initial-events-end`` (``kubectl get -w``, ``delete --wait``, client-go's WatchList);
``allowWatchBookmarks`` also gets a BOOKMARK every 10 s of quiet; ``timeoutSeconds`` ends the
stream. Objects moving in or out of a label/field selection are seen as ADDED/DELETED.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp.web

from deltaroll_sandbox.apiserver import tables
from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.selectors import field_selector, label_selector
from deltaroll_sandbox.apiserver.statuses import ApiError, bad_request
from deltaroll_sandbox.apiserver.store import Obj, Store, WatchEvent

WATCH_CONTENT_TYPE = "application/json;stream=watch"
BOOKMARK_INTERVAL_S = 10.0
DEFAULT_WATCH_TIMEOUT_S = 1800.0


def predicate(request: aiohttp.web.BaseRequest) -> Any:
    labels = label_selector(request.query.get("labelSelector"))
    fields = field_selector(request.query.get("fieldSelector"))
    return lambda obj: labels(obj) and fields(obj)


async def serve(
    store: Store,
    request: aiohttp.web.BaseRequest,
    rtype: ResourceType,
    namespace: str | None,
    name: str | None,
) -> aiohttp.web.StreamResponse:
    query = request.query
    matches = predicate(request)
    timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    initial_events = query.get("sendInitialEvents") in ("true", "1")
    since_text = query.get("resourceVersion") or ""
    as_table = (
        query.get("includeObject", "Metadata")
        if tables.wants_table(request.headers.get("Accept", ""))
        else None
    )

    def selected(obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        if name is not None and meta.get("name") != name:
            return False
        return matches(obj)

    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": WATCH_CONTENT_TYPE})
    response.enable_chunked_encoding()

    # List and subscribe in one synchronous step: nothing can slip in between.
    initial: list[Obj] = []
    try:
        if since_text in ("", "0") or initial_events:
            sub, backlog = store.subscribe(rtype.storage_key)
            initial = [o for o in store.list_objects(rtype, namespace) if selected(o)]
        else:
            if not since_text.isdigit():
                raise bad_request(f"invalid resourceVersion {since_text!r}")
            sub, backlog = store.subscribe(rtype.storage_key, int(since_text))
    except ApiError as exc:
        await response.prepare(request)
        await _write_event(response, "ERROR", exc.as_status())
        await response.write_eof()
        return response
    start_rv = store.resource_version
    try:
        await response.prepare(request)
        for obj in initial:
            shown = tables.table(rtype, [obj], start_rv, as_table) if as_table is not None else obj
            await _write_event(response, "ADDED", shown)
        if initial_events and bookmarks:
            await _write_event(response, "BOOKMARK", _bookmark(rtype, start_rv, initial_end=True))
        for event in backlog:
            await _send_event(response, rtype, event, selected, as_table)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(
                    sub.queue.get(), timeout=min(remaining, BOOKMARK_INTERVAL_S)
                )
            except TimeoutError:
                if bookmarks and time.monotonic() < deadline:
                    await _write_event(
                        response, "BOOKMARK", _bookmark(rtype, store.resource_version)
                    )
                continue
            await _send_event(response, rtype, event, selected, as_table)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away (a cancelled request ends up in `finally` too)
    finally:
        store.unsubscribe(sub)
    return response


async def _send_event(
    response: aiohttp.web.StreamResponse,
    rtype: ResourceType,
    event: WatchEvent,
    selected: Any,
    as_table: str | None,
) -> None:
    now, before = selected(event.obj), selected(event.old) and event.type != "ADDED"
    if event.type == "DELETED":
        kind = "DELETED" if before or now else None
    elif now and before:
        kind = "MODIFIED"
    elif now:
        kind = "ADDED"
    elif before:
        kind = "DELETED"  # it left the selection: watchers see it go
    else:
        kind = None
    if kind is not None:
        obj = dict(event.obj)
        obj["apiVersion"] = rtype.api_version
        if as_table is not None:
            obj = tables.table(rtype, [obj], event.resource_version, as_table)
        await _write_event(response, kind, obj)


def _bookmark(rtype: ResourceType, resource_version: int, initial_end: bool = False) -> Obj:
    meta: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"apiVersion": rtype.api_version, "kind": rtype.kind, "metadata": meta}


async def _write_event(response: aiohttp.web.StreamResponse, kind: str, obj: Obj) -> None:
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
