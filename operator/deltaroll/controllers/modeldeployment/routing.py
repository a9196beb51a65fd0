"""Which ModelDeployments an event concerns, from the operator's in-memory indexes.

Kopf fills the indexes from its watches (the ``*_index`` functions here say what each keeps of
an object); :class:`Lookups` reads them. So neither an event nor a reconcile lists every
ModelDeployment or ModelDelta of a namespace, and the cost of one stays flat as they grow:

- a pod's labels -> the ModelDeployments whose selector may choose it. Each is indexed under
  the first of its matchLabels (every pod it selects carries that label), or without any under
  its namespace alone, so a pod looks up its own labels, not every deployment;
- (namespace, model, store) -> the ModelDeltas publishing into it, and the ModelDeployments
  rolling it out (a ModelDelta that becomes Ready wakes the ones waiting for it);
- namespace -> the ModelDeployments that yield pods to an older one (``SelectorOverlap``): one
  that goes away or changes its selector wakes them.

And :class:`PodRoutes` remembers where each pod's events went last: a pod whose labels change
(or that goes) is also routed to the ModelDeployments that selected it before, which must see
it leave.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deltaroll.api.conditions import DEGRADED
from deltaroll.api.modeldelta import publishes
from deltaroll.controllers.modeldeployment.overlap import (
    SELECTOR_OVERLAP,
    Claimant,
    claimant,
    selects,
)

ModelKey = tuple[str, str, str]
"""(namespace, model, store URI)."""


def _route(namespace: str, selector: Mapping[str, Any]) -> tuple[str, ...]:
    """Where a selector is filed: its first matchLabels pair, else the namespace alone."""
    labels = selector.get("matchLabels") or {}
    if not labels:
        return (namespace,)
    key = min(labels)
    return (namespace, str(key), str(labels[key]))


def _model_key(namespace: str, spec: Mapping[str, Any]) -> ModelKey | None:
    model, uri = spec.get("model"), (spec.get("store") or {}).get("uri")
    return (namespace, str(model), str(uri)) if model and uri else None


def selector_index(namespace: str, body: Mapping[str, Any]) -> dict[Hashable, Claimant]:
    """A ModelDeployment filed where pods that it may select look it up."""
    found = claimant(body)
    return {_route(namespace, found.selector): found}


def rollout_index(namespace: str, body: Mapping[str, Any]) -> dict[Hashable, tuple[str, str]]:
    """A ModelDeployment's (name, spec.version), filed under the model and store it rolls out."""
    spec = body.get("spec") or {}
    key = _model_key(namespace, spec)
    if key is None or not spec.get("version"):
        return {}
    return {key: (str(body["metadata"]["name"]), str(spec["version"]))}


def yielding_index(namespace: str, body: Mapping[str, Any]) -> dict[Hashable, str]:
    """A ModelDeployment that yields its pods to an older one, filed under its namespace."""
    conditions = (body.get("status") or {}).get("conditions") or []
    yields = any(
        (c.get("type"), c.get("status"), c.get("reason")) == (DEGRADED, "True", SELECTOR_OVERLAP)
        for c in conditions
        if isinstance(c, Mapping)
    )
    return {namespace: str(body["metadata"]["name"])} if yields else {}


def modeldelta_index(namespace: str, body: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    """What spec.version's lookup reads of a ModelDelta, under the model and store it publishes."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    key = _model_key(namespace, spec)
    if key is None:
        return {}
    return {
        key: {
            "metadata": {"name": body["metadata"]["name"]},
            "spec": {k: spec[k] for k in ("model", "store", "version") if k in spec},
            "status": {k: status[k] for k in ("phase", "versionId", "message") if k in status},
        }
    }


Index = Mapping[Any, Iterable[Any]]


@dataclass(frozen=True)
class Lookups:
    """The indexes as one reconcile or event reads them (empty ones before Kopf starts)."""

    selectors: Index = field(default_factory=dict)
    rollouts: Index = field(default_factory=dict)
    yielding: Index = field(default_factory=dict)
    modeldeltas: Index = field(default_factory=dict)

    def claimants(self, namespace: str, labels: Mapping[str, str]) -> list[Claimant]:
        """Every ModelDeployment whose selector chooses a pod with ``labels``."""
        routes = [(namespace,)] + [(namespace, k, v) for k, v in labels.items()]
        found: dict[str, Claimant] = {}
        for route in routes:
            # list(): a snapshot, Kopf updates the index from its own thread meanwhile
            for candidate in list(self.selectors.get(route, ())):
                if candidate.name not in found and selects(candidate.selector, labels):
                    found[candidate.name] = candidate
        return list(found.values())

    def claimants_of(self, namespace: str, pods: Iterable[Mapping[str, Any]]) -> list[Claimant]:
        """Every ModelDeployment that selects any of ``pods``: who may overlap with their owner."""
        found: dict[str, Claimant] = {}
        for pod in pods:
            for candidate in self.claimants(namespace, pod["metadata"].get("labels") or {}):
                found.setdefault(candidate.name, candidate)
        return list(found.values())

    def waiting_for(self, namespace: str, modeldelta: Mapping[str, Any]) -> list[str]:
        """The ModelDeployments whose spec.version ``modeldelta`` publishes."""
        key = _model_key(namespace, modeldelta.get("spec") or {})
        if key is None:
            return []
        model, uri = key[1], key[2]
        return sorted(
            name
            for name, version in list(self.rollouts.get(key, ()))
            if publishes(modeldelta, model, uri, version, or_id=True)
        )

    def yielders(self, namespace: str) -> list[str]:
        return sorted(set(self.yielding.get(namespace, ())))

    def modeldeltas_of(self, namespace: str, model: str, uri: str) -> list[Mapping[str, Any]]:
        """The ModelDeltas publishing ``model`` into ``uri``, by name as the API lists them."""
        found = list(self.modeldeltas.get((namespace, model, uri), ()))
        return sorted(found, key=lambda body: str(body["metadata"]["name"]))


class PodRoutes:
    """Pod -> the ModelDeployments its last event was routed to (thread-safe: Kopf handles
    pods on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], frozenset[str]] = {}

    def route(self, namespace: str, pod: str, selecting: Iterable[str], *, gone: bool) -> list[str]:
        """Where this event goes: the ModelDeployments ``selecting`` the pod now, and those
        that did before; remembered for the next event unless the pod is ``gone``."""
        now, key = frozenset(selecting), (namespace, pod)
        with self._lock:
            before = self._last.pop(key, frozenset())
            if not gone:
                self._last[key] = now
        return sorted(now | before)
