"""Inference pods as the rollout planner sees them, and which pod should serve which version.

Pure functions: a pod body becomes a :class:`PodView`; :func:`assign_versions` decides which pods
carry the canary version so that exactly ``canary_count`` do, while never taking more than
``maxUnavailable`` serving pods out of service at once (a pod that is swapping weights is not
Ready, so each annotation change costs one unit of that budget until the pod is back).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_VERIFY_KEYS,
    POD_VERSION,
)
from deltaroll.api.conditions import parse_rfc3339
from deltaroll.api.peers import seed_among

POD_VERSION_SET_AT: Final = "deltaroll.dev/version-set-at"
"""Written with :data:`POD_VERSION`: when the operator asked for it, for progressDeadlineSeconds."""


@dataclass(frozen=True)
class PodView:
    """What the planner needs of one selected pod (deleted pods never become one)."""

    name: str
    wanted: str | None = None  # deltaroll.dev/version, written by the operator
    current: str | None = None  # deltaroll.dev/current-version, written by the agent
    agent_state: AgentState | None = None
    agent_message: str = ""
    ready: bool = False  # the pod's Ready condition (includes the weights-ready gate)
    version_set_at: datetime | None = None
    verify_keys: str | None = None  # deltaroll.dev/verify-keys, written by the operator


def view_pod(body: Mapping[str, Any]) -> PodView | None:
    """The pod as the planner sees it; None for a pod being deleted (it no longer counts)."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    annotations = meta.get("annotations") or {}
    state, message = parse_agent_state(annotations.get(POD_AGENT_STATE))
    ready = _ready(body.get("status") or {})
    return PodView(
        name=str(meta.get("name")),
        wanted=annotations.get(POD_VERSION),
        current=annotations.get(POD_CURRENT_VERSION),
        agent_state=state,
        agent_message=message,
        ready=ready,
        version_set_at=parse_time(annotations.get(POD_VERSION_SET_AT)),
        verify_keys=annotations.get(POD_VERIFY_KEYS),
    )


def read_state(body: Mapping[str, Any]) -> int:
    """A digest of what a reconcile reads of a pod (labels, annotations, being deleted, Ready, its
    IP), alike for the pod as listed and as watched: an event whose digest a reconcile already
    read brings it nothing new."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return hash(
        (
            tuple(sorted((meta.get("labels") or {}).items())),
            tuple(sorted((meta.get("annotations") or {}).items())),
            bool(meta.get("deletionTimestamp")),
            _ready(status),
            status.get("podIP"),
        )
    )


def _ready(status: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True (it includes the weights-ready gate)."""
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp, or None when absent or unreadable."""
    if not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


class VersionAliases:
    """Names and content ids of versions: the operator writes names, agents report ids."""

    def __init__(self, ids: Mapping[str, str] | None = None) -> None:
        self._ids = dict(ids or {})

    def same(self, reported: str | None, ref: str | None) -> bool:
        """Whether ``reported`` (a pod's current version) is the version ``ref`` names."""
        if reported is None or ref is None:
            return False
        return reported == ref or reported == self._ids.get(ref)


def serves(pod: PodView, ref: str | None, aliases: VersionAliases) -> bool:
    """The pod's engine holds ``ref``, verified, and the pod takes traffic."""
    return aliases.same(pod.current, ref) and pod.agent_state is AgentState.READY and pod.ready


def available(pod: PodView, aliases: VersionAliases) -> bool:
    """The pod serves what it was asked to serve; a pod never asked is not serving anything."""
    return pod.wanted is not None and serves(pod, pod.wanted, aliases)


def seed_candidates(
    pods: Sequence[PodView], pod_versions: Mapping[str, str], aliases: VersionAliases
) -> dict[str, str]:
    """Version -> the :data:`~deltaroll.api.annotations.POD_SEED_AMONG` value of the pods that
    ``pod_versions`` moves to it: ranked among every pod told that version, now or before, that
    does not hold it yet and whose agent has not failed, so that the agents of a rollout agree
    on who fetches its objects from the bucket however many of the others they have seen told
    (and a pod moved on its own, a late or new one, does not name only itself)."""
    told = {pod.name: pod_versions.get(pod.name, pod.wanted) for pod in pods}
    return {
        version: seed_among(
            version,
            (
                pod.name
                for pod in pods
                if told[pod.name] == version
                and not aliases.same(pod.current, version)
                and pod.agent_state is not AgentState.FAILED
            ),
        )
        for version in set(pod_versions.values())
    }


def canary_count(weight: int, total: int) -> int:
    """``weight`` percent of ``total`` pods, rounded up, at least one for any weight above 0."""
    if weight <= 0 or total == 0:
        return 0
    return min(total, max(1, math.ceil(weight * total / 100)))


def max_unavailable(value: int | str, total: int) -> int:
    """maxUnavailable as a pod count: a percentage rounds down, but is never below one."""
    if isinstance(value, str):
        return max(1, math.floor(int(value.rstrip("%")) * total / 100))
    return value


def _canary_rank(pod: PodView, target: str, aliases: VersionAliases) -> tuple[int, str]:
    """Which pods to prefer for the canary: those already there cost nothing to keep."""
    if aliases.same(pod.current, target):
        rank = 0 if pod.wanted == target else 1
    elif pod.wanted == target:
        rank = 2
    else:
        rank = 3 if pod.wanted is None else 4
    return rank, pod.name


def assign_versions(
    pods: Sequence[PodView],
    *,
    stable: str,
    target: str,
    canary: int,
    unavailable_budget: int | str,
    aliases: VersionAliases,
) -> dict[str, str]:
    """Pod name -> version to write, for the pods whose annotation must change now.

    ``canary`` pods should carry ``target`` and the rest ``stable``. A new pod (no annotation
    yet) gets its slot's version at once; an available pod is moved only while fewer than
    ``unavailable_budget`` pods are out of service; an unavailable pod is moved for free.
    """
    ranked = sorted(pods, key=lambda p: _canary_rank(p, target, aliases))
    desired = {p.name: (target if i < canary else stable) for i, p in enumerate(ranked)}
    budget = max_unavailable(unavailable_budget, len(pods))
    budget -= sum(1 for p in pods if p.wanted is not None and not available(p, aliases))
    changes: dict[str, str] = {}
    for pod in ranked:
        version = desired[pod.name]
        if pod.wanted == version:
            continue
        if pod.wanted is not None and available(pod, aliases):
            if budget <= 0:
                continue
            budget -= 1
        changes[pod.name] = version
    return changes
