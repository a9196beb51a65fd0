"""Two ModelDeployments selecting one pod: which one yields (pure), and what the yielding one's
planner does (writes nothing, says why once, resumes where it was)."""

from __future__ import annotations

from typing import Any

import pytest

from controllers.rollout_world import World, canary, make_spec
from deltaroll.api.annotations import ABORT, PROMOTE
from deltaroll.api.conditions import find_condition
from deltaroll.controllers.modeldeployment.overlap import Claimant, Overlap, claimant, older_claims

T_OLD, T_NEW = "2026-01-01T12:00:00Z", "2026-01-01T12:00:01Z"
APP = {"matchLabels": {"app": "llm"}}


def md(name: str, created: str, selector: dict[str, Any], **meta: Any) -> Claimant:
    """A ModelDeployment as the operator's index keeps it."""
    return claimant(
        {
            "metadata": {"name": name, "creationTimestamp": created, **meta},
            "spec": {"selector": selector},
        }
    )


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


PODS = [pod("p0", app="llm", pool="a"), pod("p1", app="llm", pool="b"), pod("p2", app="llm")]


def claims(overlap: Overlap | None) -> dict[str, tuple[str, ...]] | None:
    return None if overlap is None else dict(overlap.claims)


def test_the_younger_yields_the_shared_pods_and_the_older_keeps_them() -> None:
    older = md("zeta", T_OLD, APP)  # sorts last by name: age decides before the name
    younger = md("alpha", T_NEW, {"matchExpressions": [{"key": "pool", "operator": "Exists"}]})
    both = [older, younger]
    assert claims(older_claims(younger, both, PODS[:2])) == {"zeta": ("p0", "p1")}
    assert older_claims(older, both, PODS) is None


def test_the_same_creation_second_is_broken_by_name() -> None:
    a, b = md("a", T_OLD, APP), md("b", T_OLD, APP)
    assert claims(older_claims(b, [a, b], PODS)) == {"a": ("p0", "p1", "p2")}
    assert older_claims(a, [a, b], PODS) is None


def test_a_deployment_being_deleted_holds_no_pods() -> None:
    leaving = md("old", T_OLD, APP, deletionTimestamp=T_NEW)
    young = md("young", T_NEW, APP)
    assert older_claims(young, [leaving, young], PODS) is None


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"app": "other"}},
        {"matchLabels": {"app": "llm", "pool": "c"}},
        {"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]},
        {"matchLabels": {"app": "llm"}, "matchExpressions": [{"key": "x", "operator": "Bogus"}]},
    ],
)
def test_an_older_deployment_whose_selector_chooses_none_of_our_pods_is_no_overlap(
    selector: dict[str, Any],
) -> None:
    ours = [pod("p0", app="llm", pool="a"), pod("p1", app="llm", pool="b")]
    older, young = md("old", T_OLD, selector), md("young", T_NEW, APP)
    assert older_claims(young, [older, young], ours) is None


def test_pods_being_deleted_are_not_shared() -> None:
    going = pod("p9", app="llm")
    going["metadata"]["deletionTimestamp"] = T_NEW
    older, young = md("old", T_OLD, APP), md("young", T_NEW, APP)
    assert older_claims(young, [older, young], [going]) is None


def test_every_older_claimant_is_named_with_its_pods_in_an_actionable_message() -> None:
    first = md("first", T_OLD, {"matchLabels": {"pool": "a"}})
    second = md("second", T_NEW, {"matchLabels": {"pool": "b"}})
    young = md("young", "2026-01-01T12:00:02Z", APP)
    overlap = older_claims(young, [young, second, first], PODS)
    assert overlap is not None
    assert overlap.message() == (
        "pod p0 is also selected by ModelDeployment first (older); pod p1 is also selected by "
        "ModelDeployment second (older). The older keeps them: this ModelDeployment changes no "
        "pod until the selectors are disjoint (change spec.selector or the pods' labels)"
    )
    assert "pods p0, p1 are also" in Overlap((("x", ("p0", "p1")),)).message()
    fleet = tuple(f"p{i:02}" for i in range(40))
    assert "pods p00, p01, p02, p03, p04 and 35 more are also" in Overlap((("x", fleet),)).message()


# ---------------------------------------------------------------- the yielding planner

SHARED = Overlap((("fleet", ("pod-0", "pod-1")),))


def test_a_yielding_deployment_writes_nothing_says_why_once_and_resumes_where_it_was() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}))
    world = World.on("v1", 2, spec)
    world.until("Paused")
    assert world.count("v2") == 1
    world.overlap = SHARED
    world.annotations[PROMOTE] = "step"
    for _ in range(3):
        result = world.tick()
        assert result.pod_versions == {} and result.handled_requests == ()
    status = world.status
    assert status is not None and status.phase == "Degraded"
    degraded = find_condition(status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == "SelectorOverlap"
    assert degraded.message == SHARED.message() == status.message
    states = {c.type: c.status for c in status.conditions or []}
    assert states == {
        "Ready": "False",
        "Progressing": "False",
        "Reconciling": "False",
        "Degraded": "True",
        "Stalled": "True",
    }
    assert (status.canary_version, status.current_step_index) == ("v2", 1)  # the place is kept
    assert world.events().count(("Warning", "SelectorOverlap")) == 1

    world.overlap = None  # the promote request waited for the overlap to end
    resumed = world.tick()
    assert resumed.handled_requests == (PROMOTE,)
    assert ("Normal", "SelectorOverlapResolved") in world.events()
    world.until("Healthy")
    assert world.count("v2") == 2


def test_an_aborted_deployment_that_starts_overlapping_is_told_and_stays_aborted() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}))
    world = World.on("v1", 2, spec)
    world.until("Paused")
    world.annotations[ABORT] = "true"
    world.tick()
    assert world.status is not None and world.status.abort
    world.overlap = SHARED
    world.tick()
    world.tick()
    assert world.events().count(("Warning", "SelectorOverlap")) == 1  # Degraded already
    world.overlap = None
    back = world.tick()
    assert back.status.abort and back.status.phase == "Degraded"
    degraded = find_condition(back.status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == "Aborted"
    assert world.versions() == {"pod-0": "v1", "pod-1": "v1"}


def test_a_new_deployment_yielding_from_the_start_writes_nothing_to_new_pods() -> None:
    world = World.on(None, 2, make_spec(), overlap=SHARED)
    first = world.tick()
    assert first.pod_versions == {} and first.status.phase == "Degraded"
    assert first.status.stable_version is None
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "SelectorOverlap")]
    world.overlap = None
    assert world.until("Healthy").status.stable_version == "v2"
