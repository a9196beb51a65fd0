"""The object store: what etcd plus the generic registry of kube-apiserver do.

One resourceVersion counter for the whole server; every write gets the next value and an event
in a bounded history, so a watch from resourceVersion N replays exactly what happened after N
(410 Gone once N has fallen out of the history). Writes are synchronous (no ``await`` inside), so
in the single event loop a list followed by a subscribe can never miss an event.

Metadata is the server's: uid, creationTimestamp, resourceVersion, generation (bumped only when
something outside metadata and status changes), deletionTimestamp while finalizers remain.
Deleting an object garbage-collects its dependents by ownerReferences (background, foreground
or orphan propagation), as kube-controller-manager's garbage collector does.

Stored dicts are never mutated in place: every write stores a new dict, so history entries and
subscribers can share them safely; API callers always get deep copies, the sandbox's own
controllers may read the stored dicts (:meth:`Store.peek_objects`) and never change them.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import copy
import datetime
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from deltaroll_sandbox.apiserver import metadata, patches
from deltaroll_sandbox.apiserver.policies import Request
from deltaroll_sandbox.apiserver.resources import ResourceRegistry, ResourceType
from deltaroll_sandbox.apiserver.statuses import (
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    not_found,
    unsupported_media_type,
)

Obj = dict[str, Any]

# Per-request options, set by the HTTP layer. ``dryRun=All`` (kubectl apply --dry-run=server,
# kubectl diff): everything but the write. ``fieldValidation`` (Ignore, Warn, Strict): Strict
# rejects unknown fields instead of pruning them silently.
dry_run: contextvars.ContextVar[bool] = contextvars.ContextVar("dry_run", default=False)
field_validation: contextvars.ContextVar[str] = contextvars.ContextVar(
    "field_validation", default="Ignore"
)
StorageKey = tuple[str, str]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver uses for generateName
PODS = ("", "pods")
JOBS = ("batch", "jobs")
DEPLOYMENTS = ("apps", "deployments")
FOREGROUND = "foregroundDeletion"
# batch/v1 Jobs orphan their pods unless told otherwise: a legacy default kept by Kubernetes.
_DEFAULT_ORPHANS = {JOBS}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class WatchEvent:
    """One write, as watchers see it. ``old`` lets selector watches turn edits into ADD/DELETE."""

    resource_version: int
    key: StorageKey
    type: str
    obj: Obj
    old: Obj | None


@dataclass(eq=False)
class Subscription:
    """A live feed of events for one resource (or all resources when ``key`` is None)."""

    key: StorageKey | None
    queue: asyncio.Queue[WatchEvent] = field(default_factory=asyncio.Queue)


class Admission(Protocol):
    """A hook that may default, reject (raise an ApiError) or react to writes of some resources."""

    def admit(self, store: Store, rtype: ResourceType, obj: Obj, old: Obj | None) -> None: ...

    def written(self, store: Store, rtype: ResourceType, event: WatchEvent) -> None: ...


class Validator(Protocol):
    """Validating admission after defaulting, for every write (status and deletes too)."""

    def validate(self, store: Store, request: Request) -> None: ...


class Store:
    """All objects of the server, their history, their watchers."""

    def __init__(self, registry: ResourceRegistry, history_limit: int = 20000) -> None:
        self.registry = registry
        self.admissions: list[Admission] = []
        self.validators: list[Validator] = []
        self._objects: dict[StorageKey, dict[tuple[str, str], Obj]] = collections.defaultdict(dict)
        self._rv = 0
        self._history: collections.deque[WatchEvent] = collections.deque(maxlen=history_limit)
        self._history_floor = 0  # events up to this resourceVersion were dropped
        self._subscriptions: set[Subscription] = set()

    # ---------------------------------------------------------------- reading

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._objects[rtype.storage_key].get((namespace, name))
        if obj is None:
            raise not_found(rtype.plural, name, rtype.group)
        return self._present(rtype, obj)

    def find(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self._objects[rtype.storage_key].get((namespace, name))
        return self._present(rtype, obj) if obj is not None else None

    def list_objects(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        predicate: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        return [self._present(rtype, obj) for obj in self.peek_objects(rtype, namespace, predicate)]

    def peek_objects(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        predicate: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        """For the sandbox's own controllers and list responses: :meth:`list_objects` without
        the copies, which they must not change (a write replaces a stored object, it never edits
        one, so these stay as they were read, as a watch event's objects do). A Deployment's
        reconcile copied every pod of its namespace, a quarter of the API server's time with 64
        agents."""
        # Filter first, then sort only what is returned: a selective list (a ModelDeployment's
        # pods by label) costs a pass over the objects, not a sort of all of them.
        items = [
            (key, obj)
            for key, obj in self._objects[rtype.storage_key].items()
            if (namespace is None or key[0] == namespace) and (predicate is None or predicate(obj))
        ]
        return [obj for _, obj in sorted(items, key=lambda item: item[0])]

    def all_objects(self) -> Iterator[tuple[StorageKey, Obj]]:
        for key, objs in list(self._objects.items()):
            for obj in list(objs.values()):
                yield key, obj

    def subscribe(
        self, key: StorageKey | None, since: int | None = None
    ) -> tuple[Subscription, list[WatchEvent]]:
        """Start a feed; with ``since``, also return the retained events after that version."""
        if since is not None and since < self._history_floor:
            raise gone(f"too old resource version: {since} ({self._history_floor + 1})")
        backlog = [
            event
            for event in self._history
            if since is not None and event.resource_version > since
            if key is None or event.key == key
        ]
        sub = Subscription(key)
        self._subscriptions.add(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    # ---------------------------------------------------------------- writing

    def create(self, rtype: ResourceType, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if obj.get("kind") and obj["kind"] != rtype.kind:
            raise bad_request(f"the kind {obj['kind']!r} does not match the URL's {rtype.kind!r}")
        namespace = self._check_namespace(rtype, namespace, meta.get("namespace"))
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    rtype.kind,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                    rtype.group,
                )
            for _ in range(100):
                meta["name"] = meta["generateName"] + random_suffix()
                if (namespace, meta["name"]) not in self._objects[rtype.storage_key]:
                    break
        name = meta["name"]
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise invalid(
                rtype.kind,
                str(name),
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                        "of lower case alphanumeric characters, '-' or '.'",
                    )
                ],
                rtype.group,
            )
        if (namespace, name) in self._objects[rtype.storage_key]:
            raise already_exists(rtype.plural, name, rtype.group)
        if rtype.has_status:
            _clear_status(rtype, obj)  # status is written through /status only
        for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(server_field, None)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if rtype.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        self._check_metadata(rtype, obj)
        for admission in self.admissions:
            admission.admit(self, rtype, obj, None)
        self._validate(Request(rtype, "CREATE", "", namespace or "", name, obj, None))
        return self._commit(rtype, namespace or "", name, obj, None, "ADDED")

    def replace(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name in the body ({meta.get('name')!r}) does not match the URL's ({name!r})"
            )
        expected = meta.get("resourceVersion") or None
        return self._update(rtype, namespace, name, body, subresource, expected)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        subresource: str | None = None,
    ) -> Obj:
        current = self.get(rtype, namespace, name)
        kind = content_type.split(";")[0].strip()
        if kind == "application/json-patch+json":
            patched = patches.json_patch(current, body)
        elif kind in ("application/merge-patch+json", "application/apply-patch+yaml"):
            patched = patches.merge_patch(current, body)
        elif kind == "application/strategic-merge-patch+json":
            if rtype.custom:
                raise unsupported_media_type(
                    "strategic merge patch is not supported for custom resources: use --type=merge"
                )
            patched = patches.strategic_merge_patch(current, body)
        else:
            raise unsupported_media_type(f"the patch content type {kind!r} is not supported")
        if not isinstance(patched, dict):
            raise bad_request("the patch must result in an object")
        expected = None
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            expected = body["metadata"].get("resourceVersion")  # a precondition when sent
        return self._update(rtype, namespace, name, patched, subresource, expected)

    def mutate(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        change: Callable[[Obj], None],
        subresource: str | None = None,
    ) -> Obj | None:
        """For the sandbox's controllers: edit the latest version; None if the object is gone."""
        current = self.find(rtype, namespace, name)
        if current is None:
            return None
        change(current)
        return self._update(rtype, namespace, name, current, subresource, None)

    def purge(self, rtype: ResourceType, namespace: str, name: str) -> None:
        """Delete whatever its finalizers say, as the namespace and CRD cleanups do."""
        self.mutate(rtype, namespace, name, lambda o: o["metadata"].pop("finalizers", None))
        if self.find(rtype, namespace, name) is not None:
            self.delete(rtype, namespace, name, "Background")

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        grace_period_s: int | None = None,
    ) -> Obj:
        """Delete, as kube-apiserver does: finalizers hold the object (deletionTimestamp set),
        dependents follow per ``propagation``, and a running pod is deleted gracefully: it gets
        a deletionTimestamp and its kubelet removes it (``grace_period_s=0``) once stopped."""
        current = self._objects[rtype.storage_key].get((namespace, name))
        if current is None:
            raise not_found(rtype.plural, name, rtype.group)
        self._validate(Request(rtype, "DELETE", "", namespace, name, None, copy.deepcopy(current)))
        meta = current["metadata"]
        preconditions = preconditions or {}
        if preconditions.get("uid") not in (None, meta["uid"]) or preconditions.get(
            "resourceVersion"
        ) not in (None, meta["resourceVersion"]):
            raise conflict(rtype.plural, name, rtype.group)
        if propagation is None:
            propagation = "Orphan" if rtype.storage_key in _DEFAULT_ORPHANS else "Background"
        if propagation not in ("Orphan", "Background", "Foreground"):
            raise bad_request(
                f"unsupported propagationPolicy {propagation!r}: "
                "use Background, Foreground or Orphan"
            )
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        if propagation == "Foreground" and self._dependents_of(meta["uid"]):
            if meta.get("deletionTimestamp") is None or FOREGROUND not in meta.get(
                "finalizers", []
            ):
                self._mark_deleting(rtype, namespace, name, extra_finalizer=FOREGROUND)
            self._delete_dependents(meta["uid"])
            self._release_foreground_owners()
            return self.find(rtype, namespace, name) or self._present(rtype, current)
        if rtype.storage_key == PODS and meta.get("deletionTimestamp") and grace_period_s != 0:
            return self.get(rtype, namespace, name)  # terminating: its kubelet finishes the job
        grace = _pod_grace_s(rtype, current, grace_period_s)
        if grace:
            if meta.get("deletionTimestamp") is None:
                self._mark_deleting(rtype, namespace, name, grace_s=grace)
            return self.get(rtype, namespace, name)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp") is None:
                self._mark_deleting(rtype, namespace, name)
            return self.get(rtype, namespace, name)
        return self._remove(rtype, namespace, name)

    # ---------------------------------------------------------------- internals

    def _validate(self, request: Request) -> None:
        for validator in self.validators:
            validator.validate(self, request)

    def _present(self, rtype: ResourceType, obj: Obj) -> Obj:
        result = copy.deepcopy(obj)
        result["apiVersion"] = rtype.api_version
        return result

    @staticmethod
    def _check_metadata(rtype: ResourceType, obj: Obj) -> None:
        found = metadata.problems(obj["metadata"])
        if found:
            raise invalid(rtype.kind, obj["metadata"].get("name", ""), found, rtype.group)

    def _check_namespace(self, rtype: ResourceType, url_ns: str | None, body_ns: str | None) -> str:
        if not rtype.namespaced:
            return ""
        if url_ns and body_ns and url_ns != body_ns:
            raise bad_request(
                "the namespace of the provided object does not match "
                "the namespace sent on the request"
            )
        namespace = url_ns or body_ns
        if not namespace:
            raise bad_request("a namespace is required for namespaced resources")
        if ("", namespace) not in self._objects[("", "namespaces")]:
            raise not_found("namespaces", namespace)
        return namespace

    def _update(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        subresource: str | None,
        expected_rv: str | None,
    ) -> Obj:
        old = self._objects[rtype.storage_key].get((namespace, name))
        if old is None:
            raise not_found(rtype.plural, name, rtype.group)
        if expected_rv is not None and str(expected_rv) != old["metadata"]["resourceVersion"]:
            raise conflict(rtype.plural, name, rtype.group)
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                _clear_status(rtype, new)
        else:
            new = copy.deepcopy(body)
            if rtype.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for fixed in (
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
            else:
                meta.pop(fixed, None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    rtype.kind,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added "
                            "if the object is being deleted",
                        )
                    ],
                    rtype.group,
                )
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        self._check_metadata(rtype, new)
        if subresource != "status":
            for admission in self.admissions:
                admission.admit(self, rtype, new, old)
        self._validate(
            Request(rtype, "UPDATE", subresource or "", namespace, name, new, copy.deepcopy(old))
        )
        if _comparable(new) == _comparable(old):
            return self._present(rtype, old)  # a no-op write: no new version, no event
        if _spec_part(new, rtype) != _spec_part(old, rtype):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        result = self._commit(rtype, namespace, name, new, old, "MODIFIED")
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, namespace, name)
        return result

    def _commit(
        self, rtype: ResourceType, namespace: str, name: str, obj: Obj, old: Obj | None, kind: str
    ) -> Obj:
        if dry_run.get():
            obj["metadata"]["resourceVersion"] = (
                (old or {}).get("metadata", {}).get("resourceVersion", "")
            )
            return self._present(rtype, obj)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[rtype.storage_key][(namespace, name)] = obj
        self._emit(rtype, WatchEvent(self._rv, rtype.storage_key, kind, obj, old))
        return self._present(rtype, obj)

    def _emit(self, rtype: ResourceType, event: WatchEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].resource_version
        self._history.append(event)
        for sub in list(self._subscriptions):
            if sub.key is None or sub.key == event.key:
                sub.queue.put_nowait(event)
        for admission in self.admissions:
            admission.written(self, rtype, event)

    def _mark_deleting(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        extra_finalizer: str | None = None,
        grace_s: int = 0,
    ) -> None:
        old = self._objects[rtype.storage_key][(namespace, name)]
        new = copy.deepcopy(old)
        meta = new["metadata"]
        if "deletionTimestamp" not in meta and meta.get("generation"):
            meta["generation"] = int(meta["generation"]) + 1  # as kube-apiserver's markAsDeleting
        deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace_s)
        meta.setdefault("deletionTimestamp", deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta.setdefault("deletionGracePeriodSeconds", grace_s)
        if extra_finalizer and extra_finalizer not in meta.setdefault("finalizers", []):
            meta["finalizers"].append(extra_finalizer)
        self._commit(rtype, namespace, name, new, old, "MODIFIED")

    def _remove(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        if dry_run.get():
            return self._present(rtype, self._objects[rtype.storage_key][(namespace, name)])
        old = self._objects[rtype.storage_key].pop((namespace, name))
        gone_obj = copy.deepcopy(old)
        self._rv += 1
        gone_obj["metadata"]["resourceVersion"] = str(self._rv)
        self._emit(rtype, WatchEvent(self._rv, rtype.storage_key, "DELETED", gone_obj, old))
        self._collect_garbage()
        return self._present(rtype, gone_obj)

    def _rtype_of(self, key: StorageKey, obj: Obj) -> ResourceType | None:
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        return self.registry.lookup(key[0], version, key[1]) or next(
            iter(self.registry.versions_of(*key)), None
        )

    def _dependents_of(self, uid: str) -> list[tuple[StorageKey, Obj]]:
        return [
            (key, obj)
            for key, obj in self.all_objects()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _orphan_dependents(self, uid: str) -> None:
        for key, obj in self._dependents_of(uid):
            rtype = self._rtype_of(key, obj)
            if rtype is None:
                continue
            meta = obj["metadata"]

            def drop_ref(o: Obj, owner: str = uid) -> None:
                refs = [
                    r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != owner
                ]
                if refs:
                    o["metadata"]["ownerReferences"] = refs
                else:
                    o["metadata"].pop("ownerReferences", None)

            self.mutate(rtype, meta.get("namespace", ""), meta["name"], drop_ref)

    def _delete_dependents(self, uid: str) -> None:
        for key, obj in self._dependents_of(uid):
            rtype = self._rtype_of(key, obj)
            meta = obj["metadata"]
            if rtype is not None and meta.get("deletionTimestamp") is None:
                ns, name = meta.get("namespace", ""), meta["name"]
                if self.find(rtype, ns, name) is not None:
                    # As kube's GC: dependents of a foreground deletion go in foreground too.
                    self.delete(rtype, ns, name, "Foreground")

    def _collect_garbage(self) -> None:
        """Delete objects whose owners are all gone; release foreground owners left alone."""
        live = {obj["metadata"]["uid"] for _, obj in self.all_objects()}
        for key, obj in self.all_objects():
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if (
                refs
                and not any(ref.get("uid") in live for ref in refs)
                and not meta.get("deletionTimestamp")
            ):
                rtype = self._rtype_of(key, obj)
                ns, name = meta.get("namespace", ""), meta["name"]
                if rtype is not None and self.find(rtype, ns, name) is not None:
                    self.delete(rtype, ns, name, "Background")
        self._release_foreground_owners()

    def _release_foreground_owners(self) -> None:
        for key, obj in self.all_objects():
            meta = obj["metadata"]
            if FOREGROUND in (meta.get("finalizers") or []) and not self._dependents_of(
                meta["uid"]
            ):
                rtype = self._rtype_of(key, obj)
                if rtype is None:
                    continue

                def release(o: Obj) -> None:
                    o["metadata"]["finalizers"] = [
                        f for f in o["metadata"].get("finalizers", []) if f != FOREGROUND
                    ]

                self.mutate(rtype, meta.get("namespace", ""), meta["name"], release)


def _pod_grace_s(rtype: ResourceType, obj: Obj, requested: int | None) -> int:
    """The grace period of a pod's deletion: 0 (delete now) unless it runs on the kubelet."""
    if rtype.storage_key != PODS or obj["metadata"].get("deletionTimestamp"):
        return 0
    running = obj["spec"].get("nodeName") and (obj.get("status") or {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )
    if not running:
        return 0
    grace = (
        requested if requested is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
    )
    return max(0, int(grace))


#: Status fields Go serializes even when zero (no ``omitempty``): clients require them.
_ZERO_STATUS: dict[StorageKey, dict[str, int]] = {
    ("apps", "daemonsets"): dict.fromkeys(
        (
            "currentNumberScheduled",
            "desiredNumberScheduled",
            "numberMisscheduled",
            "numberReady",
        ),
        0,
    )
}


def _clear_status(rtype: ResourceType, obj: Obj) -> None:
    """No status: typed builtins still serialize an empty one (with the fields Go always
    writes), as kube-apiserver does."""
    if rtype.custom:
        obj.pop("status", None)
    else:
        obj["status"] = dict(_ZERO_STATUS.get(rtype.storage_key, {}))


def _comparable(obj: Obj) -> Obj:
    result = dict(obj)
    result["metadata"] = {
        k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"
    }
    result.pop("apiVersion", None)
    return result


def _spec_part(obj: Obj, rtype: ResourceType) -> Obj:
    """What ``generation`` tracks: everything except metadata (and status when it has its own)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rtype.has_status else set())
    return {k: v for k, v in obj.items() if k not in skip}
