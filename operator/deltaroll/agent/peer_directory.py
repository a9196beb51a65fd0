"""Which peers serve objects right now: the pods of the agent's ModelDeployment, from the API.

A peer is a pod of the agent's namespace that matches the ModelDeployment's selector, is
Running and not being deleted, and whose agent wrote the
:data:`~deltaroll.api.annotations.POD_PEER_PORT` annotation; its address is ``status.podIP``.
One list call (RBAC: pods ``list``, read-only), remembered for ``refresh_s``: a fleet of agents
polling for objects costs the API server one request per agent per few seconds. When the list
fails the agent has no peers and fetches from the bucket, as it did before peers existed.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from deltaroll.api.annotations import POD_PEER_PORT

log = structlog.get_logger(__name__)

LIST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Peer:
    """Where one peer agent serves its objects."""

    host: str
    port: int


class PeerDirectory(Protocol):
    """The live peers (not this pod), by pod name."""

    def live(self) -> dict[str, Peer]: ...


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api  # kubernetes.client.CoreV1Api
        self.namespace, self.selector, self.own_name = namespace, selector, own_name
        self._refresh_s, self._clock = refresh_s, clock
        self._listed: tuple[float, dict[str, Peer]] | None = None

    def live(self) -> dict[str, Peer]:
        now = self._clock()
        if self._listed is not None and now - self._listed[0] < self._refresh_s:
            return self._listed[1]
        peers = self._list()
        self._listed = (now, peers)
        return peers

    def _list(self) -> dict[str, Peer]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            listed = self._api.list_namespaced_pod(
                self.namespace, label_selector=self.selector, _request_timeout=LIST_TIMEOUT_S
            )
        except (ApiException, HTTPError, OSError) as exc:
            log.warning(
                "agent.peers_unlisted",
                error=f"{type(exc).__name__}: {getattr(exc, 'status', '')}",
                hint="give the agent's ServiceAccount pods list; fetching from the store",
            )
            return {}
        peers: dict[str, Peer] = {}
        for pod in listed.items:
            peer = peer_of(pod)
            if peer is not None and pod.metadata.name != self.own_name:
                peers[pod.metadata.name] = peer
        return peers


def peer_of(pod: Any) -> Peer | None:
    """Where ``pod`` (a V1Pod) serves objects, or None: not serving, not running, a bad value
    (annotations and status are checked like any input from outside)."""
    meta, status = pod.metadata, pod.status
    if meta.deletion_timestamp is not None or status is None or status.phase != "Running":
        return None
    raw_port = (meta.annotations or {}).get(POD_PEER_PORT, "")
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        return None
    try:
        address = ipaddress.ip_address(status.pod_ip or "")
    except ValueError:
        return None
    return Peer(str(address), int(raw_port))
