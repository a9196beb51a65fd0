"""The scheduler's placement, as a pure function: selectors, node affinity, spread, reasons."""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.controllers.placement import choose_node

HOST, ZONE = "kubernetes.io/hostname", "topology.kubernetes.io/zone"


def node(name: str, zone: str, *, ready: bool = True, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {HOST: name, ZONE: zone, **labels}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


NODES = [node("n1", "a", gpu="h100"), node("n2", "b"), node("n3", "a")]


def pod(spec: dict[str, Any] | None = None, app: str = "web") -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": app}},
        "spec": spec or {},
    }


def bound(node_name: str, app: str = "web", namespace: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": "x", "namespace": namespace, "labels": {"app": app}},
        "spec": {"nodeName": node_name},
        "status": {"phase": "Running"},
    }


def spread(key: str, when: str = "DoNotSchedule", max_skew: int = 1) -> dict[str, Any]:
    return {
        "topologySpreadConstraints": [
            {
                "maxSkew": max_skew,
                "topologyKey": key,
                "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": {"app": "web"}},
            }
        ]
    }


def test_the_least_busy_node_wins_and_ties_go_by_name():
    assert choose_node(pod(), NODES, []).node == "n1"
    assert choose_node(pod(), NODES, [bound("n1"), bound("n2")]).node == "n3"


def test_node_selector_and_required_affinity_filter_nodes():
    assert choose_node(pod({"nodeSelector": {"gpu": "h100"}}), NODES, [bound("n1")]).node == "n1"
    not_in_a = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": ZONE, "operator": "NotIn", "values": ["a"]}]}
                    ]
                }
            }
        }
    }
    assert choose_node(pod(not_in_a), NODES, [bound("n2"), bound("n2")]).node == "n2"
    by_field = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["n3"]}
                            ]
                        }
                    ]
                }
            }
        }
    }
    assert choose_node(pod(by_field), NODES, []).node == "n3"


def test_an_unmatched_selector_says_why_as_kube_scheduler_does():
    placement = choose_node(pod({"nodeSelector": {"gpu": "b200"}}), NODES, [])
    assert placement.node is None
    assert placement.message == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )
    assert choose_node(pod(), [], []).message == "no nodes available to schedule pods"


def test_not_ready_and_cordoned_nodes_take_no_pods():
    cordoned = node("n1", "a")
    cordoned["spec"]["unschedulable"] = True
    placement = choose_node(pod(), [cordoned, node("n2", "b", ready=False)], [])
    assert placement.message == (
        "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
    )


def test_hard_spread_keeps_max_skew_per_domain():
    # zone a already has two web pods, zone b none: with maxSkew 1 only zone b fits
    placed = [bound("n1"), bound("n3")]
    assert choose_node(pod(spread(ZONE)), NODES, placed).node == "n2"
    # other apps and other namespaces do not count
    others = [bound("n2", app="db"), bound("n2", namespace="other")]
    assert choose_node(pod(spread(ZONE)), NODES, placed + others).node == "n2"
    # per host: n1 has two, n2 one; n2 keeps the skew at 1 (and n1 would make it 2)
    assert (
        choose_node(pod(spread(HOST)), NODES[:2], [bound("n1"), bound("n1"), bound("n2")]).node
        == "n2"
    )
    assert choose_node(pod(spread(HOST)), [NODES[0]], [bound("n1")]).node == "n1"  # one domain


def test_hard_spread_refuses_when_no_domain_keeps_the_skew():
    spec = spread(HOST)
    spec["nodeSelector"] = {ZONE: "a"}
    # n1 and n3 are the domains; n1 has 2, n3 has 0: only n3 fits; with n3 cordoned none does
    cordoned = node("n3", "a")
    cordoned["spec"]["unschedulable"] = True
    placement = choose_node(pod(spec), [NODES[0], NODES[1], cordoned], [bound("n1"), bound("n1")])
    assert placement.node is None
    assert "1 node(s) didn't match pod topology spread constraints" in placement.message
    assert "1 node(s) were unschedulable" in placement.message


def test_soft_spread_prefers_the_emptier_domain_but_never_refuses():
    placed = [bound("n1"), bound("n3"), bound("n2"), bound("n2"), bound("n2")]
    # by pod count n1 or n3 would win; ScheduleAnyway on zone still puts it in zone a (2 < 3)
    assert choose_node(pod(spread(ZONE, "ScheduleAnyway")), NODES, placed).node == "n1"
    lopsided = [bound("n2")] * 5
    assert choose_node(pod(spread(ZONE, "ScheduleAnyway")), NODES[1:2], lopsided).node == "n2"


def test_finished_and_terminating_pods_leave_their_place():
    done = bound("n1")
    done["status"]["phase"] = "Succeeded"
    leaving = bound("n1")
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert choose_node(pod(spread(HOST)), NODES[:2], [done, leaving, bound("n2")]).node == "n1"
