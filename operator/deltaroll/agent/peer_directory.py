"""Which peers serve objects right now: the pods of the agent's ModelDeployment, from the API.

A peer is a pod of the agent's namespace that matches the ModelDeployment's selector, is Running
and not being deleted, and whose agent wrote the
:data:`~deltaroll.api.annotations.POD_PEER_PORT` annotation; its address is ``status.podIP``,
and the version it is told to serve (:data:`~deltaroll.api.annotations.POD_VERSION`) says
whether it pulls the same objects, the one its agent reports serving
(:data:`~deltaroll.api.annotations.POD_CURRENT_VERSION`) whether it holds them all already, and
its ``spec.nodeName`` (as this agent's own) whether it shares this agent's node cache. The
same listing names the *members* (every pod of the selector, by name and UID), the only pods
whose agents the peer server serves: a deleted pod's token, still remembered as vouched for,
opens nothing once the pod is gone, even when a new pod took its name. One list call (RBAC:
pods ``list``, read-only), remembered for ``refresh_s``: a fleet of agents polling for objects
costs the API server one request per agent per few seconds, read as JSON
(:func:`~deltaroll.api.parse.list_items`). Only a pull's first listing (:meth:`refresh`) and a
caller the listing does not know are waited for; an older one answers while the next is
fetched in the background, so a loaded API server (a list took 1-3 s in a 64-pod rollout on
two cores) does not hold up every round of an agent waiting for its objects. When a list
fails, the last good one stands for ``stale_s``; with none, :meth:`PodPeers.live` says so
(None) rather than "alone", so an agent does not seed every object because the API server
hiccuped.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from deltaroll.api.annotations import POD_CURRENT_VERSION, POD_PEER_PORT, POD_VERSION
from deltaroll.api.parse import json_object, list_items

log = structlog.get_logger(__name__)

LIST_TIMEOUT_S = 10.0
#: An unknown caller makes the server list again, at most this often (a new pod is served at
#: once; a stranger costs the API server at most this rate).
RELIST_UNKNOWN_S = 0.5


@dataclass(frozen=True)
class Peer:
    """Where one peer agent serves its objects, the version it is told to serve and the one
    it serves."""

    host: str
    port: int
    wants: str | None = None
    serves: str | None = None
    node: str | None = None  # spec.nodeName: a peer on this agent's node shares its node cache


class PeerDirectory(Protocol):
    """The live peers (not this pod), by pod name; None when they cannot be known now."""

    def live(self) -> dict[str, Peer] | None: ...

    def own_node(self) -> str | None:
        """The node this agent's pod runs on, as the last listing said (None: unknown)."""
        ...

    def refresh(self) -> None:
        """List again now, waiting for it (a pull starts: who pulls the same version now)."""
        ...

    def member(self, name: str, uid: str) -> bool:
        """Whether pod ``name`` with ``uid`` belongs to this agent's ModelDeployment (it may be
        served)."""
        ...


@dataclass(frozen=True)
class _Listing:
    at: float
    peers: dict[str, Peer]
    members: dict[str, str]  # name -> uid
    own_node: str | None


def _in_a_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="deltaroll-peer-listing", daemon=True).start()


class PodPeers:
    """Peers listed through the Kubernetes API with a label selector."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        selector: str,
        own_name: str,
        *,
        refresh_s: float = 2.0,
        stale_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        in_background: Callable[[Callable[[], None]], None] = _in_a_thread,
    ) -> None:
        self._api = api  # kubernetes.client.CoreV1Api
        self.namespace, self.selector, self.own_name = namespace, selector, own_name
        self._refresh_s, self._stale_s, self._clock = refresh_s, stale_s, clock
        self._in_background = in_background
        self._good: _Listing | None = None
        self._tried = float("-inf")  # the last list started, waited for or not
        self._waited = float("-inf")  # the last list waited for
        self._lock = threading.Lock()
        self._behind_since: float | None = None  # when the background list under way started

    def live(self) -> dict[str, Peer] | None:
        listing = self._listing(self._refresh_s)
        return None if listing is None else listing.peers

    def own_node(self) -> str | None:
        listing = self._listing(self._refresh_s)
        return None if listing is None else listing.own_node

    def refresh(self) -> None:
        # here, not on the next call: any thread's call (a peer asking) could take that turn
        now = self._clock()
        self._waited = self._tried = now
        self._keep(self._list(now))

    def member(self, name: str, uid: str) -> bool:
        listing = self._listing(self._refresh_s)
        if listing is None or listing.members.get(name) != uid:
            listing = self._listing(RELIST_UNKNOWN_S, wait=True)  # it may have started since
        return listing is not None and listing.members.get(name) == uid

    def _listing(self, max_age_s: float, *, wait: bool = False) -> _Listing | None:
        """The listing; lists again when the last is ``max_age_s`` old: waited for with
        ``wait``, with none usable or behind a background list that hangs, else in the
        background."""
        now = self._clock()
        with self._lock:
            behind = self._behind_since
            hung = behind is not None and now - behind > 2 * LIST_TIMEOUT_S
        if wait or hung or self._usable(now) is None:
            if now - self._waited >= max_age_s:
                self._waited = self._tried = now
                self._keep(self._list(now))
        elif now - self._tried >= max_age_s and behind is None:
            self._tried = now
            self._start_behind(now)
        return self._usable(now)

    def _start_behind(self, now: float) -> None:
        with self._lock:
            if self._behind_since is not None:
                return
            self._behind_since = now
        try:
            self._in_background(self._list_behind)
        except BaseException:  # no thread (the process's limit): the next call tries again
            with self._lock:
                self._behind_since = None
            raise

    def _usable(self, now: float) -> _Listing | None:
        good = self._good
        return None if good is None or now - good.at > self._stale_s else good

    def _list_behind(self) -> None:
        try:
            self._keep(self._list(self._clock()))
        finally:
            with self._lock:
                self._behind_since = None

    def _keep(self, listing: _Listing | None) -> None:
        """Keep ``listing`` unless it failed or a later one (a pull's :meth:`refresh`) is kept
        already."""
        with self._lock:
            if listing is not None and (self._good is None or listing.at >= self._good.at):
                self._good = listing

    def _list(self, now: float) -> _Listing | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = self._api.list_namespaced_pod(
                self.namespace,
                label_selector=self.selector,
                _request_timeout=LIST_TIMEOUT_S,
                _preload_content=False,
            )
            try:
                items = list_items(response.data)
            finally:
                response.release_conn()
        except (ApiException, HTTPError, OSError, ValueError) as exc:
            log.warning(
                "agent.peers_unlisted",
                error=f"{type(exc).__name__}: {getattr(exc, 'status', '')}",
                hint="give the agent's ServiceAccount pods list; the last listing stands a while",
            )
            return None
        peers: dict[str, Peer] = {}
        members: dict[str, str] = {}
        own_node = None
        for pod in items:
            meta = pod["metadata"]
            name = meta["name"]
            if meta.get("deletionTimestamp") is None and isinstance(meta.get("uid"), str):
                members[name] = meta["uid"]
            if name == self.own_name:
                own_node = node_of(pod)
            elif (peer := peer_of(pod)) is not None:
                peers[name] = peer
        return _Listing(now, peers, members, own_node)


def peer_of(pod: Mapping[str, Any]) -> Peer | None:
    """Where ``pod`` (a Pod as JSON) serves objects, or None: not serving, not running, a bad
    value (annotations and status are checked like any input from outside)."""
    meta, status = json_object(pod.get("metadata")), json_object(pod.get("status"))
    if meta.get("deletionTimestamp") is not None or status.get("phase") != "Running":
        return None
    annotations = json_object(meta.get("annotations"))
    raw_port = annotations.get(POD_PEER_PORT, "")
    # isdigit() alone admits "²", on which int() raises, and int() refuses a string of more
    # than 4,300 digits: either broke every agent's listing, so at most 5 ASCII digits
    if (
        not (isinstance(raw_port, str) and len(raw_port) <= 5)
        or not (raw_port.isascii() and raw_port.isdigit())
        or not 0 < int(raw_port) < 65536
    ):
        return None
    pod_ip = status.get("podIP")
    try:  # a string: ip_address() would also take an integer
        address = ipaddress.ip_address(pod_ip if isinstance(pod_ip, str) else "")
    except ValueError:
        return None
    wants, serves = annotations.get(POD_VERSION), annotations.get(POD_CURRENT_VERSION)
    return Peer(
        str(address),
        int(raw_port),
        wants if isinstance(wants, str) and wants else None,
        serves if isinstance(serves, str) and serves else None,
        node_of(pod),
    )


def node_of(pod: Mapping[str, Any]) -> str | None:
    """The node ``pod`` (a Pod as JSON) was scheduled to, or None (not yet, or not a string)."""
    node = json_object(pod.get("spec")).get("nodeName")
    return node if isinstance(node, str) and node else None
