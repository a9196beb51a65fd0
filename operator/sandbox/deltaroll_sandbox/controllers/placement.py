"""Where a pod may run: the default scheduler's filters and scores, as far as the sandbox needs.

A pure function of (pod, nodes, pods already placed), so it is tested without a server.
Filters, as kube-scheduler applies them: the node is Ready and not cordoned
(``spec.unschedulable``), ``spec.nodeSelector`` matches its labels, the required node affinity
(``nodeSelectorTerms``: any term, each with all of its ``matchExpressions`` and
``matchFields``) matches, and every topology spread constraint with ``whenUnsatisfiable:
DoNotSchedule`` keeps its ``maxSkew``. Among the nodes left, the one with the least skew over the
``ScheduleAnyway`` constraints wins, then the one running the fewest pods, then the name (so a
test sees the same placement every time). Not modelled: taints and tolerations, resource
requests, inter-pod affinity, ``minDomains`` and the node inclusion policies' non-defaults.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deltaroll_sandbox.apiserver.selectors import match_labels

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Placement:
    """The node chosen, or None with the scheduler's reason (``0/2 nodes are available: ...``)."""

    node: str | None
    message: str = ""


def choose_node(pod: Obj, nodes: Sequence[Obj], placed: Iterable[Obj]) -> Placement:
    """The node for ``pod`` among ``nodes``, given the pods already bound (any namespace)."""
    bound = [p for p in placed if _counts(p)]
    reasons: Counter[str] = Counter()
    # The domains of a spread constraint are those of the nodes the pod selects (Honor).
    eligible = [node for node in nodes if selects(pod, node)]
    reasons["node(s) didn't match Pod's node affinity/selector"] = len(nodes) - len(eligible)
    constraints = pod.get("spec", {}).get("topologySpreadConstraints") or []
    hard = [c for c in constraints if c.get("whenUnsatisfiable") != "ScheduleAnyway"]
    soft = [c for c in constraints if c.get("whenUnsatisfiable") == "ScheduleAnyway"]
    fits = []
    for node in eligible:
        if (reason := _unavailable(node)) is not None:
            reasons[reason] += 1
        elif any(_skew(pod, c, node, eligible, bound) > int(c.get("maxSkew", 1)) for c in hard):
            reasons["node(s) didn't match pod topology spread constraints"] += 1
        else:
            fits.append(node)
    if not nodes:
        return Placement(None, "no nodes available to schedule pods")
    if not fits:
        detail = ", ".join(
            f"{count} {reason}" for reason, count in sorted(reasons.items()) if count
        )
        return Placement(None, f"0/{len(nodes)} nodes are available: {detail}.")
    per_node = Counter(p["spec"]["nodeName"] for p in bound)

    def score(node: Obj) -> tuple[int, int, str]:
        name = node["metadata"]["name"]
        skew = sum(_skew(pod, c, node, eligible, bound) for c in soft)
        return skew, per_node[name], name

    return Placement(min(fits, key=score)["metadata"]["name"])


def selects(pod: Obj, node: Obj) -> bool:
    """Whether the pod's nodeSelector and required node affinity both accept ``node``."""
    spec = pod.get("spec", {})
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (
        (spec.get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    return required is None or any(
        _term_matches(term, node) for term in required.get("nodeSelectorTerms") or []
    )


def _unavailable(node: Obj) -> str | None:
    """Why no pod may start on ``node`` now (cordoned, not Ready); None if it may."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "node(s) were unschedulable"
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )
    return None if ready else "node(s) were not ready"


def _term_matches(term: Obj, node: Obj) -> bool:
    """A ``NodeSelectorTerm``: every expression on the labels and every one on the fields."""
    if not term.get("matchExpressions") and not term.get("matchFields"):
        return False  # an empty term matches no node
    labels = node["metadata"].get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    return all(_requirement(e, labels) for e in term.get("matchExpressions") or []) and all(
        _requirement(e, fields) for e in term.get("matchFields") or []
    )


def _requirement(expression: Obj, values: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    wanted = list(expression.get("values") or [])
    value = values.get(key)
    if operator in ("Gt", "Lt"):
        try:
            have, bound = int(value or ""), int(wanted[0])
        except (ValueError, IndexError):
            return False
        return have > bound if operator == "Gt" else have < bound
    return {
        "In": value is not None and value in wanted,
        "NotIn": value not in wanted,
        "Exists": value is not None,
        "DoesNotExist": value is None,
    }[operator]


def _skew(
    pod: Obj, constraint: Obj, node: Obj, eligible: Sequence[Obj], placed: Sequence[Obj]
) -> int:
    """The constraint's skew if ``pod`` went to ``node``: pods in the node's domain (this one
    included) minus the fewest in any eligible domain. A node without the key: no domain."""
    key = constraint["topologyKey"]
    domain_of = {
        n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(key) for n in eligible
    }
    domain = (node["metadata"].get("labels") or {}).get(key)
    if domain is None:
        return 1 << 30  # kube-scheduler: such a node does not fit a DoNotSchedule constraint
    selector = constraint.get("labelSelector")
    namespace = pod["metadata"].get("namespace")
    counts = Counter({d: 0 for d in domain_of.values() if d is not None})
    for other in placed:
        other_domain = domain_of.get(other["spec"]["nodeName"])
        if (
            other_domain is not None
            and other["metadata"].get("namespace") == namespace
            and match_labels(selector, other["metadata"].get("labels") or {})
        ):
            counts[other_domain] += 1
    return counts[domain] + 1 - min(counts.values())


def _counts(pod: Obj) -> bool:
    """Whether a pod takes a place on its node (bound, not finished, not being deleted)."""
    if pod["metadata"].get("deletionTimestamp") or not pod.get("spec", {}).get("nodeName"):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
