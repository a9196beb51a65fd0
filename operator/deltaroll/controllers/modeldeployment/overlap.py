"""Which ModelDeployment may write a pod that two of them select.

Two deployments whose selectors both choose a pod would each write its version annotation on
every reconcile, and the pod would flap between versions. The rule is deterministic, so exactly
one side yields and there is no fight: the older ModelDeployment (``creationTimestamp``, ties
broken by name) keeps the shared pods; the younger writes no pod annotation at all until no older
one selects any of its pods. Pure functions: a ModelDeployment takes part as a :class:`Claimant`
(what the operator's index keeps of it), pods as the API server's dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from deltaroll.api.modeldeployment import LabelSelector
from deltaroll.controllers.modeldeployment.pods import parse_time

SELECTOR_OVERLAP: Final = "SelectorOverlap"
"""The condition reason (and Warning Event) of a ModelDeployment that yields its pods."""
SELECTOR_OVERLAP_RESOLVED: Final = "SelectorOverlapResolved"
"""The Normal Event of a ModelDeployment that resumes once the overlap is gone."""

NAMED_PODS: Final = 5
"""How many shared pods the message names before it counts the rest."""
_NEVER: Final = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Overlap:
    """Pods of this ModelDeployment that older ones also select: older name -> its pods."""

    claims: tuple[tuple[str, tuple[str, ...]], ...]

    def message(self) -> str:
        """What a person reads in the conditions: who holds which pods, and what to do."""
        parts = [
            f"{_pods(pods)} also selected by ModelDeployment {other} (older)"
            for other, pods in self.claims
        ]
        return (
            "; ".join(parts) + ". The older keeps them: this ModelDeployment changes no pod until "
            "the selectors are disjoint (change spec.selector or the pods' labels)"
        )


def _pods(names: Sequence[str]) -> str:
    """A few names, then a count: a fleet of hundreds must not flood a condition message."""
    listed = ", ".join(names[:NAMED_PODS])
    if len(names) > NAMED_PODS:
        listed += f" and {len(names) - NAMED_PODS} more"
    return f"pod {listed} is" if len(names) == 1 else f"pods {listed} are"


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a metav1.LabelSelector (wire form) chooses a pod with ``labels``."""
    try:
        parsed = LabelSelector.model_validate(dict(selector))
    except ValueError:
        return False
    if any(labels.get(k) != v for k, v in (parsed.match_labels or {}).items()):
        return False
    for requirement in parsed.match_expressions or []:
        value, values = labels.get(requirement.key), requirement.values or []
        ok = {
            "In": value in values,
            "NotIn": value not in values,
            "Exists": requirement.key in labels,
            "DoesNotExist": requirement.key not in labels,
        }[requirement.operator]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Claimant:
    """What the overlap rule needs of one ModelDeployment (kept in the operator's index)."""

    name: str
    created: datetime  # an unreadable creationTimestamp counts as newest
    deleting: bool
    selector: Mapping[str, Any]

    @property
    def age_key(self) -> tuple[datetime, str]:
        """Older first: by creationTimestamp, then by name."""
        return self.created, self.name


def claimant(body: Mapping[str, Any]) -> Claimant:
    """The :class:`Claimant` of a ModelDeployment as the API server has it."""
    meta = body.get("metadata") or {}
    return Claimant(
        name=str(meta.get("name")),
        created=parse_time(meta.get("creationTimestamp")) or _NEVER,
        deleting=bool(meta.get("deletionTimestamp")),
        selector=dict((body.get("spec") or {}).get("selector") or {}),
    )


def older_claims(
    deployment: Claimant, others: Iterable[Claimant], pods: Sequence[Mapping[str, Any]]
) -> Overlap | None:
    """The pods of ``deployment`` (its selected ``pods``) that an older ModelDeployment in
    ``others`` also selects; None when it may write all of them.

    ``others`` may include ``deployment`` itself. ModelDeployments being deleted and pods being
    deleted take no part: neither is written any more.
    """
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    claims = []
    for other in sorted(others, key=lambda c: c.age_key):
        if other.deleting or other.age_key >= deployment.age_key:
            continue
        shared = sorted(
            str(p["metadata"]["name"])
            for p in live
            if selects(other.selector, p["metadata"].get("labels") or {})
        )
        if shared:
            claims.append((other.name, tuple(shared)))
    return Overlap(tuple(claims)) if claims else None
