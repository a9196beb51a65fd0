"""A ModelDeployment and its pods, kept current with the Kubernetes watch API for ``--watch``.

One thread per resource lists it, then watches from the list's resourceVersion and hands every
event to the caller's thread through a queue; the caller applies them and gets a fresh snapshot
after each burst. A watch the server ends (its timeout) is resumed from the last event seen; an
expired one (410 Gone) is listed again. Nothing polls. The threads are daemons blocked on their
sockets, so Ctrl-C in the caller's thread ends the process at once.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from deltaroll.api.common import GROUP, VERSION
from deltaroll.api.modeldeployment import PLURAL
from deltaroll.cli.errors import ClusterRequestError, ModelDeploymentNotFoundError

WATCH_TIMEOUT_S = 300  # the server ends each watch request after this; it is resumed at once

Snapshot = tuple[dict[str, Any], list[dict[str, Any]]]


def follow(
    custom: Any, core: Any, namespace: str, name: str, pod_selector: str | None
) -> Iterator[Snapshot]:
    """``(modeldeployment, pods)`` now, then again after each change, until the caller stops."""
    events: queue.Queue[tuple[str, str | None, Any]] = queue.Queue()
    sources: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {
        "modeldeployment": (
            custom.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            {"field_selector": f"metadata.name={name}"},
        )
    }
    if pod_selector is not None:
        sources["pods"] = (core.list_namespaced_pod, (namespace,), {"label_selector": pod_selector})
    for kind, (call, args, kwargs) in sources.items():
        threading.Thread(
            target=_watch,
            args=(kind, call, args, kwargs, events),
            name=f"watch-{kind}",
            daemon=True,
        ).start()
    objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in sources}
    listed: set[str] = set()
    while True:
        _apply(events.get(), objects, listed)
        while not events.empty():
            _apply(events.get_nowait(), objects, listed)
        if listed != set(sources):
            continue
        body = objects["modeldeployment"].get(name)
        if body is None:
            raise ModelDeploymentNotFoundError(
                f"modeldeployment {name} was deleted from namespace {namespace}"
            )
        yield body, list(objects.get("pods", {}).values())


def _apply(
    event: tuple[str, str | None, Any],
    objects: dict[str, dict[str, dict[str, Any]]],
    listed: set[str],
) -> None:
    kind, change, payload = event
    if change == "ERROR":
        raise ClusterRequestError(f"watching {kind} failed: {payload}")
    if change is None:  # a (re)list: the whole set
        objects[kind] = {item["metadata"]["name"]: item for item in payload}
        listed.add(kind)
    elif change == "DELETED":
        objects[kind].pop(payload["metadata"]["name"], None)
    else:
        objects[kind][payload["metadata"]["name"]] = payload


def _watch(
    kind: str,
    call: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    events: queue.Queue[tuple[str, str | None, Any]],
) -> None:
    """List, then watch from there; list again when the watch expired (410 Gone)."""
    import kubernetes
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        while True:
            listed = json.loads(call(*args, **kwargs, _preload_content=False).data)
            events.put((kind, None, listed.get("items") or []))
            watch = kubernetes.watch.Watch()
            version = listed["metadata"].get("resourceVersion")
            try:
                while True:
                    for event in watch.stream(
                        call, *args, **kwargs, resource_version=version,
                        timeout_seconds=WATCH_TIMEOUT_S,
                    ):  # fmt: skip
                        events.put((kind, event["type"], event["raw_object"]))
                    version = watch.resource_version or version
            except ApiException as exc:
                if exc.status != 410:
                    raise
    except (ApiException, HTTPError) as exc:
        events.put((kind, "ERROR", exc))
