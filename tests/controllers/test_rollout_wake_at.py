"""When the planner asks to look again without an event (``Plan.wake_at``): only while the
rollout waits for time, and at the moment that wait ends; never at rest."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from controllers.rollout_world import HTTP_TEMPLATE, World, canary, make_spec
from deltaroll.api.annotations import ABORT
from deltaroll.controllers.analysis.runs import Measurement, record
from deltaroll.controllers.modeldeployment.overlap import Overlap
from deltaroll.controllers.modeldeployment.planner import RECHECK_STORE_S, TargetVersion


def analysed(**template: Any) -> World:
    spec = make_spec(
        strategy=canary({"setWeight": 50}, {"analysis": {"templates": [{"templateName": "loss"}]}}),
        analysisTemplates=[{**HTTP_TEMPLATE, **template}],
    )
    return World.on("v1", 2, spec)


def test_at_rest_and_in_an_indefinite_pause_nothing_wakes() -> None:
    world = World.on("v1", 2, make_spec(version="v1"))
    assert world.tick().wake_at is None
    assert world.tick(3600).wake_at is None
    world.spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}))
    assert world.until("Paused").wake_at is None  # a promote (an event) ends it


def test_a_timed_pause_wakes_at_its_end_and_the_rollout_goes_on_then() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {"duration": "90s"}}))
    world = World.on("v1", 2, spec)
    paused = world.until("Paused")
    assert paused.wake_at == world.now + timedelta(seconds=90)
    assert world.tick(30).wake_at == paused.wake_at  # a pod event meanwhile: the same answer
    early = world.now + timedelta(seconds=59)
    assert world.tick(59).status.phase == "Paused" and world.now == early
    resumed = world.tick(1)  # exactly at wake_at
    assert resumed.status.current_step_index == 2
    (moved,) = resumed.pod_versions  # the second pod, now asked for v2, has until its deadline
    deadline = timedelta(seconds=world.spec.progress_deadline_seconds + 1)
    assert resumed.wake_at == world.now + deadline
    assert world.until("Healthy").wake_at is None


def test_an_analysis_wakes_when_each_measurement_falls_due() -> None:
    world = analysed(initialDelay="10s", interval="30s", count=2)
    started = world.until("Progressing")
    while not (started.status.analysis_results or []):
        started = world.tick()
    (run,) = started.status.analysis_results or []
    assert started.wake_at == world.now + timedelta(seconds=10)

    template = world.spec.analysis_templates[0]  # type: ignore[index]
    measured = record(run, template, Measurement("Successful", "0.5"), world.now)
    assert world.status is not None
    world.status = world.status.model_copy(update={"analysis_results": [measured]})
    assert world.tick().wake_at == world.now - timedelta(seconds=1) + timedelta(seconds=40)


def test_a_measurement_due_now_wakes_now_only_in_the_pass_that_started_its_run() -> None:
    world = analysed(count=1)
    passes = [world.tick() for _ in range(3)]
    starting = next(p for p in passes if p.status.analysis_results)
    index = passes.index(starting)
    assert starting.wake_at == world.now - timedelta(seconds=len(passes) - 1 - index)
    # later passes: the handler tried the due measurement before planning, and it waits for an
    # event (a canary pod serving, its Job finishing), not for a clock
    assert [p.wake_at for p in passes[index + 1 :]] == [None] * (len(passes) - 1 - index)


def test_a_run_measured_late_wakes_now_for_its_next_measurement_already_due() -> None:
    """The schedule is anchored on the run's start: a measurement taken late (the handler's
    clock is whole seconds, the interval 1 s) leaves the next one due at once. Nothing else
    comes to take it: on main the pass planned no wake, and the demo's canary analysis waited
    300 s for an event that never came (its pods were all Ready)."""
    world = analysed(interval="1s", count=2)
    starting = world.until("Progressing")
    while not (starting.status.analysis_results or []):
        starting = world.tick()
    (run,) = starting.status.analysis_results or []
    template = world.spec.analysis_templates[0]  # type: ignore[index]
    late = record(run, template, Measurement("Successful", "0.5"), world.now + timedelta(seconds=1))
    assert world.status is not None
    world.status = world.status.model_copy(update={"analysis_results": [late]})
    key = (run.template_name, run.step_index)
    assert world.tick(1, measured=frozenset({key})).wake_at == world.now
    assert world.tick(0).wake_at is None  # a pass that did not measure waits for an event


def test_a_pod_short_of_its_version_wakes_at_its_progress_deadline() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}), progressDeadlineSeconds=60)
    world = World.on("v1", 2, spec, agents_obey=False)
    started = world.tick()
    (moved,) = started.pod_versions
    assert started.wake_at == world.now + timedelta(seconds=61)
    world.tick(30)
    failed = world.tick(31)  # at wake_at
    assert failed.status.phase == "Degraded" and failed.status.abort
    assert failed.wake_at is None  # rolling back waits for the agents' reports
    assert world.pods[moved].wanted == "v1"


def test_a_version_only_the_store_can_announce_is_looked_for_again() -> None:
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}))
    world = World.on("v1", 2, spec, target=TargetVersion("Pending", "not there", from_store=True))
    assert world.tick().wake_at == world.now + timedelta(seconds=RECHECK_STORE_S)
    world.target = TargetVersion("Pending", "ModelDelta v2 is Computing")
    assert world.tick().wake_at is None  # the ModelDelta's own events wake it


def test_a_version_waiting_for_its_signature_is_looked_for_again() -> None:
    """`deltaroll sign` writes to the store only: no event says the signature arrived."""
    spec = make_spec(strategy=canary({"setWeight": 50}, {"pause": {}}))
    unsigned = TargetVersion(
        "Failed", "not signed", version_id="a" * 32, reason="VersionNotSigned", from_store=True
    )
    world = World.on("v1", 2, spec, target=unsigned)
    plan = world.tick()
    assert plan.status.phase == "Degraded" and not plan.pod_versions
    assert plan.wake_at == world.now + timedelta(seconds=RECHECK_STORE_S)


def test_a_yielding_or_aborted_deployment_waits_for_events_only() -> None:
    world = analysed(initialDelay="60s", interval="30s", count=5)
    world.until("Progressing")
    world.tick()
    assert world.tick().wake_at is not None
    world.overlap = Overlap((("older", ("pod-0",)),))
    assert world.tick().wake_at is None
    world.overlap = None
    world.annotations[ABORT] = "true"
    assert world.tick().wake_at is None
    assert world.status is not None and world.status.abort
    world.pods = {n: replace(p, current="v1") for n, p in world.pods.items()}
    assert world.tick(3600).wake_at is None
