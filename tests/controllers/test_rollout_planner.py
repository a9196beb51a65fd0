"""The rollout planner as a pure function: canary steps, promotion, pods and status."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.rollout_world import HTTP_TEMPLATE, T0, World, canary, make_spec, serving
from deltaroll.api.agent_state import AgentState
from deltaroll.api.annotations import ABORT, PROMOTE, RETRY
from deltaroll.api.conditions import find_condition
from deltaroll.api.public_keys import verify_keys_value
from deltaroll.controllers.modeldeployment.overlap import Overlap
from deltaroll.controllers.modeldeployment.planner import TargetVersion
from deltaroll.controllers.modeldeployment.pods import (
    PodView,
    VersionAliases,
    assign_versions,
    canary_count,
    max_unavailable,
    view_pod,
)

FOUR_STEPS = canary(
    {"setWeight": 25},
    {"pause": {}},
    {"analysis": {"templates": [{"templateName": "loss"}]}},
    {"setWeight": 100},
)


def condition(world: World, type_: str) -> str:
    found = find_condition(world.status.conditions if world.status else None, type_)
    assert found is not None, type_
    return found.status


# ---------------------------------------------------------------- pods and slots


@pytest.mark.parametrize(
    ("weight", "total", "expected"),
    [(25, 4, 1), (25, 10, 3), (1, 3, 1), (0, 5, 0), (100, 7, 7), (50, 3, 2), (10, 0, 0)],
)
def test_canary_count_rounds_up_and_is_at_least_one(weight: int, total: int, expected: int) -> None:
    assert canary_count(weight, total) == expected


@pytest.mark.parametrize(("value", "total", "expected"), [(2, 8, 2), ("25%", 8, 2), ("10%", 4, 1)])
def test_max_unavailable_percent_rounds_down_but_never_below_one(
    value: int | str, total: int, expected: int
) -> None:
    assert max_unavailable(value, total) == expected


def test_view_pod_reads_annotations_and_readiness_and_skips_deleted_pods() -> None:
    body = {
        "metadata": {
            "name": "p",
            "annotations": {
                "deltaroll.dev/version": "v2",
                "deltaroll.dev/current-version": "abc",
                "deltaroll.dev/agent-state": "Failed: object m/objects/ab is corrupt",
                "deltaroll.dev/version-set-at": "2026-01-01T12:00:00Z",
            },
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    pod = view_pod(body)
    assert pod == PodView(
        name="p",
        wanted="v2",
        current="abc",
        agent_state=AgentState.FAILED,
        agent_message="object m/objects/ab is corrupt",
        ready=True,
        version_set_at=T0,
    )
    body["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    assert view_pod(body) is None


def test_assign_moves_at_most_max_unavailable_serving_pods_and_new_pods_for_free() -> None:
    pods = [serving(f"p{i}", "v1") for i in range(4)] + [PodView(name="new")]
    changes = assign_versions(
        pods, stable="v1", target="v2", canary=3, unavailable_budget=1, aliases=VersionAliases()
    )
    # the new pod takes a canary slot without using the budget; one serving pod moves
    assert changes == {"new": "v2", "p0": "v2"}


def test_assign_counts_pods_already_swapping_against_the_budget() -> None:
    swapping = replace(serving("p0", "v1"), wanted="v2", ready=False)
    pods = [swapping] + [serving(f"p{i}", "v1") for i in range(1, 4)]
    changes = assign_versions(
        pods, stable="v1", target="v2", canary=4, unavailable_budget=1, aliases=VersionAliases()
    )
    assert changes == {}


def test_assign_moves_unavailable_pods_for_free() -> None:
    failed = replace(serving("p0", "v1"), wanted="v2", agent_state=AgentState.FAILED, ready=False)
    pods = [failed, serving("p1", "v2"), serving("p2", "v2")]
    changes = assign_versions(
        pods, stable="v1", target="v2", canary=0, unavailable_budget=1, aliases=VersionAliases()
    )
    # p0 is out of service already, so moving it is free; it also uses up the budget, so p1
    # waits until p0 serves again
    assert changes == {"p0": "v1"}


def test_a_pod_reporting_the_version_id_serves_its_name() -> None:
    aliases = VersionAliases({"v2": "sha-2"})
    pod = replace(serving("p", "v2"), current="sha-2")
    changes = assign_versions(
        [pod, serving("q", "v1")],
        stable="v1",
        target="v2",
        canary=1,
        unavailable_budget=1,
        aliases=aliases,
    )
    assert changes == {}


# ---------------------------------------------------------------- first deployment


def test_first_deployment_moves_every_pod_and_becomes_healthy() -> None:
    world = World.on(
        None, 3, make_spec(version="v1", strategy=FOUR_STEPS, analysisTemplates=[HTTP_TEMPLATE])
    )
    first = world.tick()
    assert first.pod_versions == {"pod-0": "v1", "pod-1": "v1", "pod-2": "v1"}
    assert first.status.phase == "Progressing"
    done = world.tick()
    assert done.status.phase == "Healthy"
    assert done.status.stable_version == "v1"
    assert [h.version for h in done.status.history or []] == ["v1"]
    assert condition(world, "Ready") == "True"
    assert ("Normal", "Promoted") in world.events()


def test_a_first_deployment_that_cannot_load_is_degraded() -> None:
    world = World.on(None, 2, make_spec(version="v1"))
    world.agents_obey = False
    world.tick()
    world.pods["pod-1"] = replace(
        world.pods["pod-1"], agent_state=AgentState.FAILED, agent_message="no such version"
    )
    result = world.tick()
    assert result.status.phase == "Degraded" and result.status.stable_version is None
    assert "pod-1 cannot serve v1: no such version" in (result.status.message or "")
    assert ("Warning", "AgentFailed") in world.events()


def test_first_deployment_waits_for_its_version_without_touching_pods() -> None:
    world = World.on(None, 2, make_spec(version="v1"))
    world.target = TargetVersion("Pending", "ModelDelta v1 is Computing")
    result = world.tick()
    assert result.pod_versions == {}
    assert result.status.phase == "Progressing"
    assert "ModelDelta v1 is Computing" in (result.status.message or "")


# ---------------------------------------------------------------- a full canary


def test_canary_25_pause_analysis_100_reaches_v2_step_by_step() -> None:
    spec = make_spec(strategy=FOUR_STEPS, analysisTemplates=[HTTP_TEMPLATE])
    world = World.on("v1", 4, spec)

    started = world.tick()
    assert started.status.canary_version == "v2"
    assert ("Normal", "RolloutStarted") in [(e.type, e.reason) for e in started.events]
    assert world.count("v2") == 1  # ceil(25% of 4)

    paused = world.tick()
    assert paused.status.phase == "Paused"
    assert paused.status.current_step_index == 1
    assert paused.status.pause_start_time is not None
    assert condition(world, "Progressing") == "True"
    assert condition(world, "Reconciling") == "True"
    # an indefinite pause stays paused however long it waits
    assert world.tick(advance_s=3600).status.phase == "Paused"
    assert world.count("v2") == 1

    world.annotations[PROMOTE] = "step"
    analysing = world.tick()
    assert analysing.handled_requests == (PROMOTE,)
    assert analysing.status.current_step_index == 2
    assert analysing.status.pause_start_time is None
    (run,) = analysing.status.analysis_results or []
    assert (run.template_name, run.step_index, run.version, run.phase) == (
        "loss",
        2,
        "v2",
        "Running",
    )
    assert world.tick().status.phase == "Progressing"  # still analysing
    assert world.count("v2") == 1

    world.status = world.status.model_copy(  # the handler recorded a good measurement
        update={"analysis_results": [run.model_copy(update={"phase": "Successful"})]}
    )
    for _ in range(3):  # maxUnavailable 1: the other three pods move one at a time
        moving = world.tick()
        assert len(moving.pod_versions) == 1
        assert moving.status.phase == "Progressing"
    done = world.tick()
    assert done.status.phase == "Healthy"
    assert world.count("v2") == 4
    assert done.status.stable_version == "v2"
    assert done.status.canary_version is None
    assert done.status.current_step_index == 4
    assert [h.version for h in done.status.history or []] == ["v2", "v1"]
    assert done.status.updated_pods == 4 and done.status.ready_pods == 4
    assert condition(world, "Ready") == "True"
    assert condition(world, "Stalled") == "False"


def test_no_step_ever_swaps_more_pods_than_max_unavailable() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"setWeight": 100}), maxUnavailable="50%")
    world = World.on("v1", 8, spec)
    world.agents_obey = False
    for _ in range(12):
        world.tick()
        swapping = [p for p in world.pods.values() if not p.ready]
        assert len(swapping) <= 4
        world.settle()
    assert world.status is not None and world.status.phase == "Healthy"
    assert max(len(w) for w in world.written) == 4


def test_timed_pause_waits_for_its_duration() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {"duration": "1m"}}))
    world = World.on("v1", 2, spec)
    world.tick()
    paused = world.tick()
    assert paused.status.phase == "Paused"
    assert world.tick(advance_s=30).status.phase == "Paused"
    world.tick(advance_s=31)
    assert world.until("Healthy").status.stable_version == "v2"


def test_promote_full_skips_every_remaining_step() -> None:
    spec = make_spec(strategy=FOUR_STEPS, analysisTemplates=[HTTP_TEMPLATE])
    world = World.on("v1", 4, spec)
    world.tick()
    assert world.tick().status.phase == "Paused"
    world.annotations[PROMOTE] = "full"
    result = world.tick()
    assert result.status.current_step_index == 4
    assert not result.status.analysis_results  # the analysis step never ran
    assert world.until("Healthy").status.stable_version == "v2"
    assert ("Normal", "PromotedFull") in world.events()


def test_requests_with_nothing_to_act_on_are_removed_and_change_nothing() -> None:
    world = World.on("v1", 2, make_spec(version="v1"))
    world.annotations.update({PROMOTE: "step", ABORT: "true"})
    result = world.tick()
    assert set(result.handled_requests) == {PROMOTE, ABORT}
    assert result.status.phase == "Healthy" and not result.status.abort
    assert result.pod_versions == {}


def test_no_steps_moves_every_pod_bounded_by_max_unavailable() -> None:
    world = World.on("v1", 3, make_spec(maxUnavailable=2))
    assert len(world.tick().pod_versions) == 2
    assert len(world.tick().pod_versions) == 1
    assert world.tick().status.phase == "Healthy"


# ---------------------------------------------------------------- analysis outcomes


def test_failed_analysis_rolls_every_pod_back_and_stays_degraded() -> None:
    spec = make_spec(
        strategy=canary({"setWeight": 50}, {"analysis": {"templates": [{"templateName": "loss"}]}}),
        analysisTemplates=[HTTP_TEMPLATE],
    )
    world = World.on("v1", 4, spec.model_copy(update={"max_unavailable": 2}))
    world.tick()
    running = world.tick()
    (run,) = running.status.analysis_results or []
    failed = run.model_copy(update={"phase": "Failed", "message": "loss 9.1 > baseline 2.0"})
    world.status = world.status.model_copy(update={"analysis_results": [failed]})
    aborted = world.tick()
    assert aborted.status.abort and aborted.status.aborted_at is not None
    assert aborted.status.phase == "Degraded"
    assert ("Warning", "AnalysisFailed") in [(e.type, e.reason) for e in aborted.events]
    assert world.count("v1") == 4
    settled = world.tick()
    assert settled.events == ()  # no repeated warnings
    assert settled.status.phase == "Degraded"
    assert settled.status.stable_version == "v1"
    assert "loss 9.1 > baseline 2.0" in (settled.status.message or "")
    assert "every pod is back on v1" in (settled.status.message or "")
    assert condition(world, "Degraded") == "True" and condition(world, "Stalled") == "True"
    assert condition(world, "Ready") == "False"
    assert condition(world, "Reconciling") == "False"
    for _ in range(3):  # never fights GitOps: it stays put until spec.version changes
        assert world.tick(advance_s=600).pod_versions == {}
    assert world.status is not None and world.status.phase == "Degraded"


def test_inconclusive_analysis_pauses_until_promoted() -> None:
    spec = make_spec(
        strategy=canary({"setWeight": 50}, {"analysis": {"templates": [{"templateName": "loss"}]}}),
        analysisTemplates=[HTTP_TEMPLATE],
    )
    world = World.on("v1", 2, spec)
    world.tick()
    (run,) = world.tick().status.analysis_results or []
    world.status = world.status.model_copy(
        update={
            "analysis_results": [
                run.model_copy(update={"phase": "Inconclusive", "message": "neither held"})
            ]
        }
    )
    assert world.tick().status.phase == "Paused"
    world.annotations[PROMOTE] = "step"
    assert world.until("Healthy").status.stable_version == "v2"


def test_background_analysis_starts_at_its_step_and_its_failure_aborts() -> None:
    spec = make_spec(
        strategy=canary(
            {"setWeight": 25},
            {"pause": {}},
            {"setWeight": 50},
            {"pause": {}},
            analysis={"templates": [{"templateName": "loss"}], "startingStep": 1},
        ),
        analysisTemplates=[HTTP_TEMPLATE],
    )
    world = World.on("v1", 4, spec)
    first = world.tick()
    assert not first.status.analysis_results  # step 0 < startingStep
    paused = world.tick()
    (run,) = paused.status.analysis_results or []
    assert run.step_index is None and run.phase == "Running"
    world.status = world.status.model_copy(
        update={
            "analysis_results": [
                run.model_copy(update={"phase": "Error", "message": "engine unreachable"})
            ]
        }
    )
    aborted = world.tick()
    assert aborted.status.abort
    assert ("Warning", "AnalysisError") in [(e.type, e.reason) for e in aborted.events]


def test_background_analysis_ends_successful_when_the_rollout_finishes() -> None:
    spec = make_spec(
        strategy=canary({"setWeight": 50}, analysis={"templates": [{"templateName": "loss"}]}),
        analysisTemplates=[HTTP_TEMPLATE],
    )
    world = World.on("v1", 2, spec)
    done = world.until("Healthy")
    (run,) = done.status.analysis_results or []
    assert run.phase == "Successful" and run.finished_at is not None


# ---------------------------------------------------------------- other reasons to roll back


def test_agent_failed_on_the_canary_rolls_back() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 25}, {"pause": {}})))
    world.agents_obey = False
    world.tick()
    (name,) = [n for n, p in world.pods.items() if p.wanted == "v2"]
    world.pods[name] = replace(
        world.pods[name],
        agent_state=AgentState.FAILED,
        agent_message="delta object m/objects/ab is corrupt",
    )
    aborted = world.tick()
    assert aborted.status.abort
    assert aborted.pod_versions == {name: "v1"}
    assert "corrupt" in (aborted.status.message or "")
    degraded = find_condition(aborted.status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == "AgentFailed"


def test_progress_deadline_rolls_back_a_pod_that_never_arrives() -> None:
    spec = make_spec(strategy=canary({"setWeight": 25}), progressDeadlineSeconds=120)
    world = World.on("v1", 4, spec)
    world.agents_obey = False
    world.tick()
    assert world.tick(advance_s=60).status.phase == "Progressing"
    late = world.tick(advance_s=61)
    assert late.status.abort
    degraded = find_condition(late.status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == "ProgressDeadlineExceeded"


def test_without_auto_rollback_a_failure_holds_where_it_is() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}), autoRollback=False)
    world = World.on("v1", 2, spec)
    world.agents_obey = False
    world.tick()
    (name,) = [n for n, p in world.pods.items() if p.wanted == "v2"]
    world.pods[name] = replace(world.pods[name], agent_state=AgentState.FAILED, agent_message="x")
    held = world.tick()
    assert held.status.phase == "Degraded" and not held.status.abort
    assert held.pod_versions == {}
    assert world.count("v2") == 1
    assert ("Warning", "AgentFailed") in [(e.type, e.reason) for e in held.events]
    world.annotations[ABORT] = "true"  # a person decides: back to stable
    assert world.tick().pod_versions == {name: "v1"}


# ---------------------------------------------------------------- abort, retry, GitOps


def test_abort_then_retry_restarts_from_the_first_step() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 25}, {"pause": {}})))
    world.tick()
    world.tick()
    world.annotations[ABORT] = "true"
    aborted = world.tick()
    assert aborted.handled_requests == (ABORT,)
    assert aborted.status.abort and world.count("v1") == 4
    world.annotations[RETRY] = "true"
    retried = world.tick()
    assert retried.handled_requests == (RETRY,)
    assert not retried.status.abort
    assert retried.status.current_step_index == 0
    assert world.count("v2") == 1
    assert world.tick().status.phase == "Paused"


def test_a_new_spec_version_after_an_abort_starts_a_new_rollout() -> None:
    world = World.on("v1", 2, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    world.tick()
    world.annotations[ABORT] = "true"
    world.tick()
    world.spec = world.spec.model_copy(update={"version": "v3"})
    world.generation = 2
    started = world.tick()
    assert not started.status.abort
    assert started.status.canary_version == "v3"
    assert started.status.observed_generation == 2
    assert all(c.observed_generation == 2 for c in started.status.conditions or [])


def test_spec_version_back_to_stable_after_an_abort_is_healthy() -> None:
    world = World.on("v1", 2, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    world.tick()
    world.annotations[ABORT] = "true"
    world.tick()
    world.spec = world.spec.model_copy(update={"version": "v1"})
    result = world.until("Healthy")
    assert not result.status.abort and result.status.canary_version is None
    assert condition(world, "Degraded") == "False"


def test_a_new_spec_version_mid_rollout_supersedes_the_canary() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    world.until("Paused")
    assert world.count("v2") == 2
    world.spec = world.spec.model_copy(update={"version": "v3"})
    started = world.tick()
    assert started.status.canary_version == "v3" and started.status.current_step_index == 0
    paused = world.until("Paused")
    assert paused.status.canary_version == "v3"
    assert (world.count("v3"), world.count("v1"), world.count("v2")) == (2, 2, 0)
    assert all(len(w) <= 1 for w in world.written[-3:])  # still one swap at a time


def test_a_version_in_the_rollback_window_skips_the_steps() -> None:
    steps = canary({"setWeight": 25}, {"pause": {}})
    world = World.on("v1", 4, make_spec(strategy=steps))
    world.tick()
    world.annotations[PROMOTE] = "full"
    world.until("Healthy")
    world.spec = world.spec.model_copy(update={"version": "v1"})  # v1 is back in git
    world.tick()
    assert ("Normal", "RollbackStarted") in world.events()
    result = world.until("Healthy")
    assert result.status.stable_version == "v1"
    assert world.status is not None
    assert all(s.phase != "Paused" for s in [p.status for p in world.plans[-4:]])


def test_rollback_window_zero_runs_the_steps() -> None:
    world = World.on(
        "v1", 4, make_spec(strategy=canary({"setWeight": 25}, {"pause": {}}), rollbackWindow=0)
    )
    world.tick()
    world.annotations[PROMOTE] = "full"
    world.until("Healthy")
    world.spec = world.spec.model_copy(update={"version": "v1"})
    assert world.until("Paused").status.canary_version == "v1"


# ---------------------------------------------------------------- pods coming and going


def test_a_new_pod_gets_its_slots_version() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    world.until("Paused")
    world.pods["pod-new"] = PodView(name="pod-new")  # scale-up to 5: 50% is 3 pods
    result = world.tick()
    assert result.pod_versions == {"pod-new": "v2"}
    world.pods["pod-newer"] = PodView(name="pod-newer")  # 6 pods: 50% is 3, already there
    assert world.tick().pod_versions == {"pod-newer": "v1"}


def test_a_deleted_pod_is_not_counted() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 50}, {"pause": {}})))
    world.until("Paused")
    canaries = [n for n, p in world.pods.items() if p.wanted == "v2"]
    del world.pods[canaries[0]]  # the kubelet removed it; view_pod skips deleting pods
    result = world.tick()
    assert result.status.total_pods == 3
    # 50% of 3 pods is 2: one canary is left, so one more pod moves, even while paused
    assert list(result.pod_versions.values()) == ["v2"]
    assert world.count("v2") == 2
    assert world.tick(advance_s=0).status.phase == "Paused"


# ---------------------------------------------------------------- waiting for the version


def test_a_modeldelta_not_ready_holds_the_rollout_in_progressing() -> None:
    world = World.on("v1", 2, make_spec(strategy=canary({"setWeight": 50})))
    world.target = TargetVersion("Pending", "ModelDelta v2 is Computing (Job running)")
    for _ in range(3):
        held = world.tick(advance_s=3600)  # not subject to progressDeadlineSeconds
        assert held.status.phase == "Progressing" and held.pod_versions == {}
    progressing = find_condition(held.status.conditions, "Progressing")
    assert progressing is not None and progressing.reason == "WaitingForVersion"
    assert "Computing" in progressing.message
    world.target = TargetVersion("Ready", version_id="sha-2")
    assert world.until("Healthy").status.history[0].version_id == "sha-2"  # type: ignore[index]


def test_a_promote_while_the_modeldelta_computes_waits_for_the_version() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 25}, {"pause": {}})))
    world.target = TargetVersion("Pending", "ModelDelta v2 is Computing (Job running)")
    world.annotations[PROMOTE] = "full"
    held = world.tick()
    assert held.status.phase == "Progressing" and held.handled_requests == ()
    world.target = TargetVersion("Ready", version_id="sha-2")
    promoted = world.tick()
    assert promoted.handled_requests == (PROMOTE,)
    assert world.until("Healthy").status.stable_version == "v2"  # no pause on the way


def test_a_failed_modeldelta_is_degraded_without_moving_pods() -> None:
    world = World.on("v1", 2, make_spec())
    world.target = TargetVersion("Failed", "Job failed: OOMKilled")
    result = world.tick()
    assert result.status.phase == "Degraded" and result.pod_versions == {}
    assert ("Warning", "ModelDeltaFailed") in [(e.type, e.reason) for e in result.events]


def test_last_transition_time_changes_only_with_the_condition_status() -> None:
    world = World.on("v1", 4, make_spec(strategy=canary({"setWeight": 25}, {"pause": {}})))
    world.tick()
    first = find_condition(world.status.conditions, "Progressing")  # type: ignore[union-attr]
    world.tick(advance_s=30)
    later = find_condition(world.status.conditions, "Progressing")  # type: ignore[union-attr]
    assert first is not None and later is not None
    assert first.last_transition_time == later.last_transition_time
    assert world.now - T0 == timedelta(seconds=31)


# ---------------------------------------------------------------- invariants, any canary


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=9),
    weights=st.lists(st.integers(min_value=1, max_value=100), max_size=4, unique=True),
    budget=st.one_of(st.integers(min_value=1, max_value=4), st.sampled_from(["25%", "50%"])),
    pauses=st.booleans(),
    lag=st.integers(min_value=0, max_value=2),
)
def test_any_canary_respects_max_unavailable_and_ends_on_the_new_version(
    total: int, weights: list[int], budget: int | str, pauses: bool, lag: int
) -> None:
    steps: list[dict[str, object]] = []
    for weight in sorted(weights):
        steps.append({"setWeight": weight})
        if pauses:
            steps.append({"pause": {"duration": "10s"}})
    world = World.on("v1", total, make_spec(strategy=canary(*steps), maxUnavailable=budget))
    world.agents_obey = False
    allowed = max_unavailable(budget, total)
    for tick in range(200):
        world.tick(advance_s=5)
        out_of_service = [p for p in world.pods.values() if not p.ready]
        assert len(out_of_service) <= allowed
        if tick % (lag + 1) == 0:
            world.settle()
        if world.status is not None and world.status.phase == "Healthy":
            break
    assert world.status is not None and world.status.phase == "Healthy"
    assert world.status.stable_version == "v2" and world.count("v2") == total


# ---------------------------------------------------------------- signed versions


def public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_every_pod_carries_the_accepted_keys_from_the_patch_that_gives_it_a_version() -> None:
    pem = public_pem()
    spec = make_spec(version="v1", verification={"publicKeys": [pem]})
    keys = verify_keys_value([pem])
    world = World.on(None, 2, spec)
    first = world.tick()
    assert first.pod_versions == {"pod-0": "v1", "pod-1": "v1"}
    assert first.pod_keys == {"pod-0": keys, "pod-1": keys}  # the same pass: one patch per pod
    assert world.tick().pod_keys == {}  # nothing to rewrite once they carry them

    world.spec = make_spec(version="v1")  # verification removed: the annotation goes
    assert world.tick().pod_keys == {"pod-0": None, "pod-1": None}
    world.spec = spec
    world.overlap = Overlap(claims=(("older", ("pod-0",)),))
    assert world.tick().pod_keys == {}  # a yielding deployment writes on no pod


def test_an_unsigned_version_is_degraded_without_moving_a_pod_until_it_is_signed() -> None:
    spec = make_spec(
        verification={"publicKeys": [public_pem()]}, strategy=canary({"setWeight": 50})
    )
    world = World.on("v1", 2, spec)
    why = "v2 of 'qwen3' is not signed by an accepted key (abcd): nothing was applied"
    world.target = TargetVersion("Failed", why, version_id="sha-2", reason="VersionNotSigned")
    for _ in range(2):
        held = world.tick(advance_s=3600)
        assert held.status.phase == "Degraded" and held.pod_versions == {}
    degraded = find_condition(held.status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == "VersionNotSigned"
    assert degraded.message == f"version v2 cannot be rolled out: {why}"
    assert ("Warning", "VersionNotSigned") in world.events()
    assert world.versions() == {"pod-0": "v1", "pod-1": "v1"}
    world.target = TargetVersion("Ready", version_id="sha-2")  # signed since
    assert world.until("Healthy").status.stable_version == "v2"
